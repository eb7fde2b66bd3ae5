"""The agent process's gRPC face: the llmbench.v1 servicer, query screening, status reports,
authentication, Prometheus metrics (and the query errors they count) and systemd notifications.
"""

__all__ = ["grpc_server", "metrics", "query_errors", "screening", "sdnotify", "servicer", "status"]
