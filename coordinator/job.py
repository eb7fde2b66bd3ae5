"""One LoadGen sample on its way through the agents."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from llmbench.proto import pb


@dataclass
class Job:
    """One LoadGen sample from issue to completion, across attempts on different agents."""
    sample_id: int  # LoadGen's response id
    index: int  # QSL index
    prompt: np.ndarray  # int32 token ids
    max_new_tokens: int
    min_new_tokens: int = 1
    issued_at: float = field(default_factory=time.monotonic)
    tokens: list[int] = field(default_factory=list)  # output so far; kept across re-dispatch
    first_token_at: float | None = None
    done_at: float | None = None
    attempts: int = 0
    agent: str = ""  # agent of the current (last) attempt
    error: str = ""  # set when the query could not be served

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.issued_at

    @property
    def tpot_s(self) -> float | None:
        if self.first_token_at is None or self.done_at is None or len(self.tokens) < 2:
            return None
        return (self.done_at - self.first_token_at) / (len(self.tokens) - 1)

    @property
    def kv_demand(self) -> int:
        return len(self.prompt) + self.max_new_tokens

    def wire_query(self, wire_id: int) -> pb.Query:
        have = len(self.tokens)
        prompt = self.prompt.tolist() + self.tokens if have else self.prompt.tolist()
        return pb.Query(id=wire_id, prompt_tokens=prompt, max_new_tokens=self.max_new_tokens - have,
                        min_new_tokens=max(self.min_new_tokens - have, 0))
