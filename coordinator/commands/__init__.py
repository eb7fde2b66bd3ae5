"""The coordinator's command lines: `llmbench coordinator`, `run`, `accuracy`, `compliance`, `compare`,
`submission`, and the routing-ceiling benchmark.
"""

__all__ = ["accuracy", "ceiling", "compare", "compliance", "coordinator", "run_local", "submission"]
