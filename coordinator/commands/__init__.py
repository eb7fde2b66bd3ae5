"""The coordinator's command lines: `llmbench coordinator`, `run`, `accuracy`, `compliance`, and the
routing-ceiling benchmark.
"""

__all__ = ["accuracy", "ceiling", "compliance", "coordinator", "run_local"]
