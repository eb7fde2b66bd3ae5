"""What a finished run leaves for people: report.md and its PNG charts.
"""

__all__ = ["charts", "markdown"]
