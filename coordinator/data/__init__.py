"""Datasets: MLPerf's prompt and tokenizers, the loaders, the synthetic default.
"""

__all__ = ["dataset", "loaders", "prompt", "synthetic"]
