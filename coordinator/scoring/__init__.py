"""Accuracy (MLPerf's ROUGE evaluation with its sentence splitting, a run judged against a baseline run)
and compliance TEST06.
"""

__all__ = ["accuracy", "baseline", "compliance", "sentences"]
