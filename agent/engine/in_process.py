"""In-process use of any Engine (for `generate`, `bench` and tests): submit, then wait for all."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

from llmbench.agent.engine.types import Engine, ErrorCode, FinishReason, Request, StepOutput, token_runs


@dataclass
class Generation:
    tokens: list[int] = field(default_factory=list)
    finish: FinishReason | None = None
    error: tuple[ErrorCode, str] | None = None
    first_token_time: float | None = None  # time.perf_counter() when the first token arrived
    end_time: float | None = None


def generate(engine: Engine, requests: Sequence[Request], timeout: float | None = None
             ) -> dict[int, Generation]:
    """Submit requests (ids unique) to a started engine and block until each finished or failed."""
    ids = [r.id for r in requests]
    if len(set(ids)) != len(ids):
        raise ValueError("request ids must be unique")
    results = {i: Generation() for i in ids}
    pending = set(ids)
    done = threading.Event()

    def sink(out: StepOutput) -> None:
        now = time.perf_counter()
        for qid, tokens in token_runs(out):
            g = results[qid]
            if not g.tokens:
                g.first_token_time = now
            g.tokens.extend(tokens)
        for qid, reason in out.finished:
            results[qid].finish, results[qid].end_time = reason, now
            pending.discard(qid)
        for qid, code, message in out.errors:
            results[qid].error, results[qid].end_time = (code, message), now
            pending.discard(qid)
        if not pending:
            done.set()

    if not ids:
        return results
    engine.submit(list(requests), sink)
    if not done.wait(timeout):
        engine.drop_sink(sink)
        raise TimeoutError(f"{len(pending)} of {len(ids)} queries unfinished after {timeout} s")
    return results
