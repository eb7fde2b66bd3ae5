"""What a finished run leaves for people and scripts: report.md, results.json and PNG charts; and runs
compared side by side.
"""

__all__ = ["charts", "comparison", "figures", "loadgen_log", "markdown", "results"]
