"""One benchmark run: its checks, session, exit status, output files, local GPU choice and peak search.
"""

__all__ = ["exits", "find_peak", "gpus", "outputs", "preflight", "session"]
