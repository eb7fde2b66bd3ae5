"""The agent process's gRPC face: the llmbench.v1 servicer, query screening, status reports,
authentication, Prometheus metrics and systemd notifications.
"""

__all__ = ["grpc_server", "metrics", "screening", "sdnotify", "servicer", "status"]
