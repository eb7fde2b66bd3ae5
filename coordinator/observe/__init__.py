"""Live view of a run: counters, the progress line, Prometheus metrics and the WatchRun service.
"""

__all__ = ["metrics", "progress_text", "prometheus", "status_service"]
