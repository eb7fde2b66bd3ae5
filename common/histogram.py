"""Prometheus histograms: observations counted into fixed buckets, exposed as `_bucket{le=...}`, `_sum`
and `_count` (cumulative, so scrapes of several agents or runs add up and rates can be windowed).

    h = Histogram(LATENCY_BOUNDS_S)
    h.observe(0.042)                                   # from any thread
    family = Family("x_ttft_seconds", "histogram", "time to first token")
    add_histogram(family, h.snapshot(), agent="a")     # the samples of one labelled series
"""
from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass

from llmbench.common.prometheus import Family

# Bucket bounds in seconds: latencies from 1 ms to 2 min (TTFT, queue wait, end to end), per-token times
# from 0.5 ms to 2 s, engine steps from 0.5 ms to 10 s.
LATENCY_BOUNDS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
TOKEN_BOUNDS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0)
STEP_BOUNDS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class HistogramSnapshot:
    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]  # observations <= each bound, then all of them (the +Inf bucket)
    sum: float

    @property
    def count(self) -> int:
        return self.cumulative[-1]


class Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"histogram bounds must increase: {bounds}")
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.bounds, value)  # the first bound >= value: Prometheus' `le`
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def snapshot(self) -> HistogramSnapshot:
        with self._lock:
            counts, total = list(self._counts), self._sum
        running, cumulative = 0, []
        for n in counts:
            running += n
            cumulative.append(running)
        return HistogramSnapshot(self.bounds, tuple(cumulative), total)


def add_histogram(family: Family, snap: HistogramSnapshot, **labels: str) -> Family:
    """The snapshot's samples under family (kind "histogram"), with labels on each."""
    for bound, n in zip((*(repr(b) for b in snap.bounds), "+Inf"), snap.cumulative):
        family.add(n, "_bucket", **labels, le=bound)
    return family.add(snap.sum, "_sum", **labels).add(snap.count, "_count", **labels)
