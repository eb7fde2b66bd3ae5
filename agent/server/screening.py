"""Checks on a client's queries made before anything is copied or reaches the engine.

The engine validates each query's contents (vocabulary, max_new_tokens, context, KV); these checks
need only sizes and ids, so a hostile 10-million-token prompt is refused without building a
10-million-item list, and a duplicate id never reaches the engine.
"""
from __future__ import annotations

from typing import Iterable

from llmbench.agent.engine.types import ErrorCode, Request, StepOutput
from llmbench.proto import pb

MAX_STOP_IDS = 256


def size_problem(n_prompt: int, n_stop: int, max_context: int) -> tuple[ErrorCode, str] | None:
    if n_prompt > max_context:
        return ErrorCode.TOO_LONG, f"prompt of {n_prompt} tokens exceeds the context of {max_context} tokens"
    if n_stop > MAX_STOP_IDS:
        return ErrorCode.INVALID_QUERY, f"{n_stop} stop token ids; at most {MAX_STOP_IDS} are allowed"
    return None


def screen(queries: Iterable[pb.Query], open_ids: set[int], max_context: int) -> tuple[StepOutput, list[Request]]:
    """Split a batch into errors (duplicate ids, oversized queries) and Requests for the engine."""
    refused = StepOutput(0)
    accepted: list[Request] = []
    seen: set[int] = set()
    for q in queries:
        if q.id in open_ids or q.id in seen:
            refused.errors.append((q.id, ErrorCode.DUPLICATE_ID, f"query id {q.id} is already running on this stream"))
            continue
        problem = size_problem(len(q.prompt_tokens), len(q.stop_token_ids), max_context)
        if problem is not None:
            refused.errors.append((q.id, *problem))
            continue
        seen.add(q.id)
        accepted.append(Request(q.id, list(q.prompt_tokens), q.max_new_tokens, q.min_new_tokens,
                                tuple(q.stop_token_ids), q.ignore_eos, tpot_limit_s=q.tpot_limit_ms / 1e3))
    return refused, accepted
