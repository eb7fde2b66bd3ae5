"""Accuracy (MLPerf's ROUGE evaluation with its sentence splitting) and compliance TEST06.
"""

__all__ = ["accuracy", "compliance", "sentences"]
