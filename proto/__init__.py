"""The wire contract between coordinator and agents (package llmbench.v1)."""
from llmbench.proto import llmbench_pb2 as pb
from llmbench.proto import llmbench_pb2_grpc as rpc

# The largest message either side sends or accepts: a bigger one gets RESOURCE_EXHAUSTED before any of
# it is parsed.
MAX_MESSAGE_BYTES = 64 << 20

__all__ = ["MAX_MESSAGE_BYTES", "pb", "rpc"]
