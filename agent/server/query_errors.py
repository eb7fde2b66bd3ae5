"""The query errors this agent sent back, by code (Prometheus' llmbench_agent_query_errors_total).

Process-wide, as the agent is: one per process, and Prometheus counters live as long as it does.
"""
from __future__ import annotations

import threading
from collections import Counter
from typing import Iterable

from llmbench.agent.engine.types import ErrorCode

_lock = threading.Lock()
_counts: Counter[ErrorCode] = Counter()


def count(errors: Iterable[tuple[int, ErrorCode, str]]) -> None:
    """A step's (id, code, message) errors, as they go out."""
    codes = [ErrorCode(code) for _, code, _ in errors]
    if codes:
        with _lock:
            _counts.update(codes)


def snapshot() -> dict[str, int]:
    """Every code's count, 0 included (a series that exists from the start gives rate() a baseline)."""
    with _lock:
        return {code.name.lower(): _counts[code] for code in ErrorCode}
