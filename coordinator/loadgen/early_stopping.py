"""How many queries LoadGen's early stopping needs before it can call a run VALID.

LoadGen (early_stopping.cc, results.cc) takes a latency percentile p as met, with confidence c, once
its queries make it unlikely enough that more of them were over than it saw: with t of n queries over,
it needs P(at most t of n over, each one over with probability 1 - p) <= 1 - c. Server and Interactive
judge the TTFT/TPOT limits at p99 (none over: 459 queries); SingleStream estimates its p90 latency from
the queries above it, and LoadGen asks for at least one (t = 1: 64 queries, its "Processed at least 64").
"""
from __future__ import annotations

import math

CONFIDENCE = 0.99  # LoadGen's, for every scenario
LIMITS_PERCENTILE = 0.99  # Server and Interactive: the TTFT and TPOT limits hold at p99
SINGLE_STREAM_PERCENTILE = 0.9  # mlperf.conf's *.SingleStream.target_latency_percentile


def queries_needed(percentile: float, overs: int = 0, confidence: float = CONFIDENCE) -> int:
    """The fewest queries with which LoadGen's early stopping passes `percentile` with `overs` of them
    over it (more queries for each one over)."""
    n = overs + 1
    while _at_most(overs, n, 1 - percentile) > 1 - confidence:
        n += 1
    return n


def _at_most(k: int, n: int, p: float) -> float:
    """P(at most k of n independent events of probability p): the binomial distribution's CDF."""
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))


SERVER_QUERIES = queries_needed(LIMITS_PERCENTILE)  # 459: 0.99 ** 459 < 0.01 <= 0.99 ** 458
SINGLE_STREAM_QUERIES = queries_needed(SINGLE_STREAM_PERCENTILE, overs=1)  # 64
