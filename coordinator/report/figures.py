"""The figures report.md and results.json both state, computed once: the measured rate, the wall-clock
breakdown of the whole job, latency distributions at the reported percentiles."""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.coordinator.run.session import RunResult

# The percentiles every latency distribution reports (vLLM's and MLPerf's usual ones); keys "p50" ... "p99.9".
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
OTHER = "other"  # wall-clock not in any named phase: settings, connections, summary, charts
TOTAL = "total"


def percentile_key(p: float) -> str:
    return f"p{p:g}"


def measured_rate(result: RunResult) -> float:
    """Samples per second: LoadGen's figure, else answered samples over the LoadGen test's wall time."""
    if result.summary.samples_per_s:
        return result.summary.samples_per_s
    seconds = result.timings_s.get("loadgen", 0.0)
    return result.snapshot.completed / seconds if seconds > 0 else 0.0


def wall_clock(result: RunResult, metrics: RunMetrics) -> dict[str, float]:
    """Seconds per phase (timings_s' names), then OTHER and TOTAL: the whole job up to now."""
    total = time.monotonic() - metrics.job_started_at
    phases = dict(result.timings_s)
    return {**phases, OTHER: max(total - sum(phases.values()), 0.0), TOTAL: total}


def distribution_ms(values_s: Sequence[float]) -> dict[str, float | int | None]:
    """count, mean, min, max and the PERCENTILES of latencies given in seconds, in milliseconds (None
    where there are no values: JSON has no NaN)."""
    data = np.asarray(values_s, dtype=np.float64) * 1000
    out: dict[str, float | int | None] = {"count": int(data.size)}
    if not data.size:
        return out | {k: None for k in ("mean", "min", "max", *map(percentile_key, PERCENTILES))}
    out |= {"mean": float(data.mean()), "min": float(data.min()), "max": float(data.max())}
    for p, v in zip(PERCENTILES, np.percentile(data, PERCENTILES)):
        out[percentile_key(p)] = float(v)
    return out


def described(describe: list[str]) -> dict[str, str]:
    """BenchSettings.describe()'s setting lines ("  label: value", after its heading) by label."""
    return dict(line.strip().split(": ", 1) for line in describe[1:])
