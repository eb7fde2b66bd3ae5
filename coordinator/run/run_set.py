"""`--submission-runs`: every run an MLPerf submission of the benchmark needs, one after another on the
same agents, each in its own folder under the output folder, so `llmbench submission` can build from
them (docs/submission.md).

Per scenario, Offline and the latency-bound one (--scenario, else the benchmark's first other than
Offline: Server for llama3.1-8b, SingleStream for llama3.1-8b-edge): a performance run, its accuracy run
and its TEST06 run, in that order.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from llmbench.coordinator.loadgen import benchmarks
from llmbench.coordinator.run.session import CoordinatorConfig

KINDS = {"performance": {}, "accuracy": {"mode": "accuracy"}, "TEST06": {"compliance": "TEST06"}}


def check(cfg: CoordinatorConfig) -> None:
    """Refuse a set that could not make a submission, before any agent is contacted."""
    if cfg.mode != "performance" or cfg.compliance:
        raise ValueError("--submission-runs makes the performance, accuracy and TEST06 runs itself: drop --mode "
                         "accuracy and --compliance")
    if cfg.dataset == "synthetic" or not cfg.tokenizer:
        raise ValueError("--submission-runs needs --dataset with reference summaries (CNN/DailyMail) and --tokenizer: "
                         "its accuracy runs are scored")


def scenarios(cfg: CoordinatorConfig) -> list[str]:
    bench = benchmarks.get(cfg.benchmark)
    other = cfg.scenario if cfg.scenario != "Offline" else next(s.name for s in bench.scenarios if s.name != "Offline")
    bench.scenario(other)  # one the benchmark runs, or the error that says which does
    return ["Offline", other]


def plan(cfg: CoordinatorConfig) -> list[CoordinatorConfig]:
    """The set's runs, in order: each one's config with its own folder, OUTPUT/<scenario>-<kind>. --target-qps
    is the latency-bound scenario's rate; Offline's comes from user.conf (or mlperf.conf, or the demo)."""
    return [dataclasses.replace(cfg, scenario=scenario, output=Path(cfg.output) / f"{scenario.lower()}-{kind.lower()}",
                                checked=None, target_qps=None if scenario == "Offline" else cfg.target_qps, **changes)
            for scenario in scenarios(cfg) for kind, changes in KINDS.items()]


def build_command(runs: list[CoordinatorConfig]) -> str:
    """The `llmbench submission` line that builds the set (what only the submitter knows left as ORG, NAME)."""
    return ("llmbench submission --submitter ORG --system NAME " + " ".join(str(r.output) for r in runs)
            + f" --output {Path(runs[0].output).parent / 'submission'}")
