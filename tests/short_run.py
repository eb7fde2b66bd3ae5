"""One short real Server run for the report tests: two simulated agents (4k tokens/s) on loopback, real
LoadGen, 40 samples at 50 QPS for 3 s; its files still in the run's staging folder."""
from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from llmbench.coordinator.commands import run_local
from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.coordinator.run.session import CoordinatorConfig, RunResult, run_benchmark


def server_run(folder: Path) -> tuple[RunResult, RunMetrics]:
    args = argparse.Namespace(agents=2, engine="simulated", model="tiny", tokens_per_s=4000, agent_args="")
    agents = run_local.start_agents(args, folder)
    try:
        metrics = RunMetrics()
        cfg = CoordinatorConfig(agents=",".join(a.address for a in agents), output=folder / "out", scenario="Server",
                                max_samples=40, target_qps=50, duration_s=3, progress_s=0)
        return asyncio.run(run_benchmark(cfg, metrics, say=lambda line: None)), metrics
    finally:
        run_local.stop_agents(agents)
