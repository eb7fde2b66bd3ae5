"""Small helpers shared by agent and coordinator (auth, metrics exposition, workload shapes); never
imports either side."""
