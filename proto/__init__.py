"""The wire contract between coordinator and agents (package llmbench.v1)."""
from llmbench.proto import llmbench_pb2 as pb
from llmbench.proto import llmbench_pb2_grpc as rpc

# The largest message an agent sends (step results, status) and its callers accept.
MAX_MESSAGE_BYTES = 64 << 20
# The largest message an agent takes in; a bigger one gets RESOURCE_EXHAUSTED from its length prefix,
# before any of it is read. Requests are small (one 128k-token query is under 1 MiB; senders split
# batches below this), and the limit is what bounds the memory of calls nobody vetted yet: 16 concurrent
# 60 MiB bodies to the open health Check, twice, grew an agent 641 MiB at 64 MiB, none at 4 MiB.
MAX_REQUEST_BYTES = 4 << 20

__all__ = ["MAX_MESSAGE_BYTES", "MAX_REQUEST_BYTES", "pb", "rpc"]
