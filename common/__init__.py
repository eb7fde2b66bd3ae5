"""Small pure helpers shared by agent and coordinator (no I/O, no torch, no gRPC)."""
