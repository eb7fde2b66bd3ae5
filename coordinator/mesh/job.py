"""One LoadGen sample on its way through the agents."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from llmbench.common.kv import kv_tokens
from llmbench.proto import MAX_REQUEST_BYTES, pb


@dataclass
class Job:
    """One LoadGen sample from issue to completion, across attempts on different agents."""
    sample_id: int  # LoadGen's response id
    index: int  # QSL index
    prompt: np.ndarray  # int32 token ids
    max_new_tokens: int
    min_new_tokens: int = 1
    tpot_limit_ms: float = 0.0  # the scenario's time-per-output-token limit, which agents size their steps to
    issued_at: float = field(default_factory=time.monotonic)
    tokens: list[int] = field(default_factory=list)  # output so far; kept across re-dispatch
    first_token_at: float | None = None
    last_token_at: float = 0.0  # when its latest tokens arrived; 0.0: none yet (agent_slot.take_tokens)
    done_at: float | None = None
    attempts: int = 0
    agent: str = ""  # agent of the current (last) attempt
    error: str = ""  # set when the query could not be served
    wire_body: bytes = b""  # wire_body(prompt, ...) if made ahead, else b"" (built at dispatch)

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.issued_at

    @property
    def tpot_s(self) -> float | None:
        if self.first_token_at is None or self.done_at is None or len(self.tokens) < 2:
            return None
        return (self.done_at - self.first_token_at) / (len(self.tokens) - 1)

    @property
    def e2e_s(self) -> float | None:
        return None if self.done_at is None else self.done_at - self.issued_at

    @property
    def kv_demand(self) -> int:
        return kv_tokens(len(self.prompt), self.max_new_tokens)

    def wire_query(self, wire_id: int) -> pb.Query:
        have = len(self.tokens)
        if not have and self.wire_body:  # parsing packed ids costs a fraction of building them from ints
            return pb.Query.FromString(pb.Query(id=wire_id).SerializeToString() + self.wire_body)
        prompt = self.prompt.tolist() + self.tokens if have else self.prompt.tolist()
        return pb.Query(id=wire_id, prompt_tokens=prompt, max_new_tokens=self.max_new_tokens - have,
                        min_new_tokens=max(self.min_new_tokens - have, 0), tpot_limit_ms=self.tpot_limit_ms)


def wire_body(prompt: np.ndarray, max_new_tokens: int, min_new_tokens: int, tpot_limit_ms: float = 0.0) -> bytes:
    """A first attempt's pb.Query without its id, serialized: made ahead of the timed run (QSL load), it
    completes with any id by concatenation (protobuf merges concatenated messages)."""
    return pb.Query(prompt_tokens=prompt.tolist(), max_new_tokens=max_new_tokens,
                    min_new_tokens=min_new_tokens, tpot_limit_ms=tpot_limit_ms).SerializeToString()


SUBMIT_BYTES = MAX_REQUEST_BYTES - 64  # room for the two length prefixes around the queries


def encode_submits(queries: list[pb.Query], limit: int = SUBMIT_BYTES) -> list[bytes]:
    """The queries as serialized pb.ServeRequest submits, in order, each under `limit` bytes (what the agent
    takes in) unless one query alone is larger; built without copying each query's prompt into a batch
    first (that copy cost more than the serializing)."""
    requests: list[bytes] = []
    batch: list[bytes] = []
    size = 0
    for query in queries:
        item = _field_1(query.SerializeToString())
        if batch and size + len(item) > limit:
            requests.append(_field_1(b"".join(batch)))
            batch, size = [], 0
        batch.append(item)
        size += len(item)
    return [*requests, _field_1(b"".join(batch))]


def _field_1(payload: bytes) -> bytes:
    """Field number 1, length-delimited (ServeRequest.submit and QueryBatch.queries both are)."""
    head = bytearray(b"\x0a")
    n = len(payload)
    while n > 0x7F:
        head.append(n & 0x7F | 0x80)
        n >>= 7
    head.append(n)
    return bytes(head) + payload
