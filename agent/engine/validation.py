"""What makes a query invalid for any engine: one set of checks and messages for the real and the
simulated engine (size-only checks made before a query reaches an engine are in screening.py)."""
from __future__ import annotations

import math

from llmbench.agent.engine.types import ErrorCode, Request


def request_problem(req: Request, vocab_size: int, max_context: int, blocks_needed: int,
                    blocks_total: int) -> tuple[ErrorCode, str] | None:
    n = len(req.prompt)
    if n == 0:
        return ErrorCode.INVALID_QUERY, "prompt is empty"
    if min(req.prompt) < 0 or max(req.prompt) >= vocab_size:
        i, t = next((i, t) for i, t in enumerate(req.prompt) if not 0 <= t < vocab_size)
        return (ErrorCode.INVALID_QUERY,
                f"prompt token {t} at position {i} is outside the vocabulary 0..{vocab_size - 1}")
    if any(not 0 <= t < vocab_size for t in req.stop_ids):
        return ErrorCode.INVALID_QUERY, f"stop ids {list(req.stop_ids)} outside the vocabulary 0..{vocab_size - 1}"
    if req.max_new_tokens <= 0:
        return ErrorCode.INVALID_QUERY, f"max_new_tokens must be >= 1, got {req.max_new_tokens}"
    if req.min_new_tokens < 0:
        return ErrorCode.INVALID_QUERY, f"min_new_tokens must be >= 0, got {req.min_new_tokens}"
    if not (math.isfinite(req.tpot_limit_s) and req.tpot_limit_s >= 0):
        return (ErrorCode.INVALID_QUERY, f"tpot_limit_ms must be a finite number >= 0 (0: none), got "
                                         f"{req.tpot_limit_s * 1e3:g}")
    if n + req.max_new_tokens > max_context:
        return (ErrorCode.TOO_LONG, f"prompt ({n} tokens) + max_new_tokens ({req.max_new_tokens}) exceeds "
                                    f"the context of {max_context} tokens")
    if blocks_needed > blocks_total:
        return (ErrorCode.TOO_LONG, f"prompt + max_new_tokens needs {blocks_needed} KV blocks, "
                                    f"the cache has {blocks_total}")
    return None
