"""The agent's command lines: `llmbench agent`, `generate`, `bench`, `calibrate`, and the kernel benchmarks.
"""

__all__ = ["agent", "bench", "bench_attention", "bench_kernels", "calibrate", "generate"]
