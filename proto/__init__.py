"""The wire contract between coordinator and agents (package llmbench.v1)."""
from llmbench.proto import llmbench_pb2 as pb
from llmbench.proto import llmbench_pb2_grpc as rpc

__all__ = ["pb", "rpc"]
