"""The demo's Server and Interactive rate, sized from what the agents at hand complete.

A fixed demo rate (7 QPS, what two tiny-model agents hold on an idle 2-core box) made the default
`llmbench run` INVALID on a busy box or a slower one: queries queue, and TTFT p99 passes its limit. So
a demo-scaled latency run without --target-qps first runs a short Offline probe on the same agents,
and asks a share of the rate they completed: latency-bound scenarios hold their limits well below the
rate a whole batch at once completes.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from llmbench.coordinator.loadgen import scenarios
from llmbench.coordinator.run import find_peak, preflight
from llmbench.coordinator.run.session import CoordinatorConfig, run_session

# The Offline probe: one query of PROBE_QPS x PROBE_S x 1.1 = 44 samples, a few seconds on small CPU agents
# (a batch as large as a demo's Server run keeps in flight), longer only where they are slower.
PROBE_QPS, PROBE_S = 10.0, 4.0
SHARE = {"Server": 0.4, "Interactive": 0.25}  # of the probe's rate: Interactive's limits are 4x tighter


def sized(cfg: CoordinatorConfig, say: Callable[[str], None] = print,
          timings: dict[str, float] | None = None) -> CoordinatorConfig:
    """`cfg` with its demo rate measured on its agents, when it is a demo-scaled latency-bound performance
    run that names no rate; else `cfg` as it is. The probe's wall time goes in `timings`."""
    spec = scenarios.get(cfg.scenario)
    if cfg.demo is None or cfg.target_qps is not None or not spec.latency_limits or cfg.mode != "performance" \
            or cfg.compliance:
        return cfg
    folder = Path(tempfile.mkdtemp(prefix="llmbench-probe-"))
    started = time.monotonic()
    try:
        probe = find_peak.trial_config(cfg, "offline", None, PROBE_S, 0)
        probe = dataclasses.replace(probe, output=folder, progress_s=0, target_qps=PROBE_QPS)
        say("Demo rate: measuring what the agents complete (a short Offline probe)")
        summary = run_session(dataclasses.replace(probe, checked=preflight.check(probe)), say=lambda line: None).summary
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if timings is not None:
        timings["demo rate probe"] = time.monotonic() - started
    if not summary.samples_per_s:
        raise RuntimeError("the demo's Offline probe completed no samples: the agents answer nothing")
    share = SHARE[spec.name]
    qps = max(round(summary.samples_per_s * share, 2), 0.1)
    why = (f"demo: {share:g} of the {summary.samples_per_s:.2f} samples/s these agents completed in an "
           f"Offline probe (--target-qps sets a rate)")
    say(f"Demo rate: {qps:g} QPS, {why.removeprefix('demo: ')}")
    return dataclasses.replace(cfg, demo=dataclasses.replace(cfg.demo, target_qps=qps, rate_why=why))
