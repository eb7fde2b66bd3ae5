"""`--find-peak`: the highest target QPS at which Server or Interactive holds its latency limits.

Short probing runs bisect the target QPS: a probe passes when LoadGen's TTFT and TPOT p99 are within the
scenario's limits (a short run may be INVALID only for too few queries, which says nothing of the
rate). Without --target-qps the first probe is a short Offline run, whose samples/s bounds what any
latency-bound scenario can complete. The highest passing rate is then confirmed by one longer run
that LoadGen itself must call VALID (long enough for its early stopping); if it is not, the rate
steps down by the tolerance and is confirmed again. Each run keeps its own folder; find-peak.md in
the output folder has the curve and the answer.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from llmbench.coordinator.loadgen import scenarios
from llmbench.coordinator.loadgen.settings import DEMO
from llmbench.coordinator.loadgen.summary import Summary
from llmbench.coordinator.run.written import write_text

PEAK_FILE = "find-peak.md"
MAX_PROBES = 8
TOLERANCE = 0.05  # bisect until the bracket is this narrow, relative to its top
CONFIRMS = 2
# LoadGen's p99 early stopping needs 459 queries with none over the limits (more with some over): the
# confirming run lasts at least this many queries at its rate, whatever --peak-confirm-duration says.
CONFIRM_QUERIES = 700
OFFLINE_PROBE_QPS = 50.0  # sizes the Offline probe's one query: 50 x probe seconds x 1.1 samples


@dataclass(frozen=True)
class Trial:
    qps: float  # the target (Offline: the rate it completed)
    kind: str  # "offline", "probe" or "confirm"
    summary: Summary

    @property
    def passes(self) -> bool:
        """Probes: the latency limits hold. Confirming runs: LoadGen says VALID."""
        return self.summary.result == "VALID" if self.kind == "confirm" else within_limits(self.summary)


def within_limits(s: Summary) -> bool:
    return all(p is not None and (limit is None or p <= limit)
               for p, limit in ((s.ttft_p99_ms, s.ttft_limit_ms), (s.tpot_p99_ms, s.tpot_limit_ms)))


# (kind, target QPS or None for an Offline probe) -> its Trial
RunAt = Callable[[str, float | None], Trial]


@dataclass
class Peak:
    trials: list[Trial]
    qps: float | None  # the highest confirmed VALID target, None if none was found

    def lines(self) -> list[str]:
        rows = ["| run | target QPS | completed/s | TTFT p99 ms | TPOT p99 ms | LoadGen | within limits |",
                "| --- | --- | --- | --- | --- | --- | --- |"]
        for t in self.trials:
            s = t.summary
            limits = "—" if t.kind == "offline" else "yes" if within_limits(s) else "no"
            rows.append(f"| {t.kind} | {t.qps:.4g} | {_num(s.samples_per_s, '.2f')} | {_num(s.ttft_p99_ms, '.1f')} | "
                        f"{_num(s.tpot_p99_ms, '.2f')} | {s.result or '?'} | {limits} |")
        answer = (f"Peak: {self.qps:g} QPS VALID ({self.trials[-1].summary.scenario})" if self.qps is not None
                  else "Peak: none found: no target rate was confirmed VALID")
        return rows + ["", answer]


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def search(run_at: RunAt, start_qps: float | None, say: Callable[[str], None] = print) -> Peak:
    trials: list[Trial] = []
    lo, hi = 0.0, None
    if start_qps is None:
        offline = run_at("offline", None)
        trials.append(offline)
        hi = offline.summary.samples_per_s
        if not hi:
            return Peak(trials, None)
        qps = _round(0.85 * hi)
    else:
        qps = start_qps
    while sum(t.kind == "probe" for t in trials) < MAX_PROBES:
        trial = run_at("probe", qps)
        trials.append(trial)
        if trial.passes:
            lo = qps
        else:
            hi = qps
        say(f"find-peak: {qps:g} QPS {'within' if trial.passes else 'over'} the limits; "
            f"bracket [{lo:g}, {'?' if hi is None else f'{hi:g}'}]")
        if hi is not None and lo > 0 and hi - lo <= TOLERANCE * hi:
            break
        qps = _round(qps * 1.5 if hi is None else (lo + hi) / 2)
    peak = None
    target = lo
    for _ in range(CONFIRMS):
        if target <= 0:
            break
        trial = run_at("confirm", target)
        trials.append(trial)
        say(f"find-peak: confirming {target:g} QPS: {trial.summary.result or 'no result'}")
        if trial.passes:
            peak = target
            break
        target = _round(target * (1 - TOLERANCE))
    return Peak(trials, peak)


def _round(qps: float) -> float:
    """Targets with three significant digits: the curve reads as the rates it names."""
    return float(f"{qps:.3g}")


def trial_config(cfg, kind: str, qps: float | None, probe_s: float, confirm_s: float):
    """The CoordinatorConfig of one run of the search, in its own folder under cfg.output. The Offline
    probe is demo-scaled on purpose: one query sized to the probe's duration at OFFLINE_PROBE_QPS,
    not MLPerf's 13,368 samples."""
    name = "offline" if qps is None else f"{kind}-{qps:g}qps"
    duration = max(confirm_s, CONFIRM_QUERIES / qps) if kind == "confirm" else probe_s
    changes = dict(output=Path(cfg.output) / name, checked=None, duration_s=duration)
    if qps is None:
        changes.update(scenario=scenarios.OFFLINE.name, target_qps=OFFLINE_PROBE_QPS, demo=cfg.demo or DEMO)
    else:
        changes.update(target_qps=qps)
    return dataclasses.replace(cfg, **changes)


def write(peak: Peak, output: Path) -> Path:
    return write_text(Path(output) / PEAK_FILE, "# find-peak\n\n" + "\n".join(peak.lines()) + "\n")
