"""One llmbench run folder, read for a submission: its results.json (the run's benchmark, scenario, mode,
settings, agents and host), LoadGen's logs, and what kind of run it was (performance, accuracy or TEST06).
A folder that lacks what a submission needs is refused with what is missing."""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from llmbench.coordinator.loadgen import benchmarks, scenarios
from llmbench.coordinator.loadgen.detail_log import DETAIL_FILE, records
from llmbench.coordinator.loadgen.summary import SUMMARY_FILE
from llmbench.coordinator.report.results import read_results
from llmbench.coordinator.run.outputs import ACCURACY_FILE, ACCURACY_LOG, RESULTS_FILE, VERIFY_FILE

PERFORMANCE, ACCURACY, TEST06 = "performance", "accuracy", "TEST06"
AUDITED = "Found Audit Config file"  # LoadGen's words when it reads an audit.config
RESULTS_KEYS = ("run", "agents", "system", "accuracy", "compliance")  # what is read of results.json
DEMO_REASON = " - demo"  # how a settings change the demo scale made ends (settings.BenchSettings.changes)


@dataclass(frozen=True)
class Agent:
    address: str
    node: str
    device: str
    model: str
    engine: str
    dtype: str
    quantization: str
    kv_cache_dtype: str
    memory_total_bytes: int

    @property
    def precision(self) -> tuple[str, str, str, str, str]:
        """(model, engine, weights dtype, GEMM quantization, KV cache dtype): what one result must not mix."""
        return self.model, self.engine, self.dtype, self.quantization, self.kv_cache_dtype


@dataclass
class RunFolder:
    path: Path
    results: dict  # results.json
    detail: dict  # LoadGen's detail log: key -> value (the last record of each key)
    audited: bool  # LoadGen read an audit.config (a compliance run)

    @property
    def run(self) -> dict:
        return self.results["run"]

    @property
    def kind(self) -> str:
        if self.results["compliance"]["passed"] is not None or self.audited:
            return TEST06  # the one compliance test llmbench runs
        return ACCURACY if self.run["mode"] == ACCURACY else PERFORMANCE

    @property
    def benchmark(self) -> str:
        return self.run["benchmark"]

    @property
    def scenario(self) -> str:
        return self.run["scenario"]

    @property
    def conf_model(self) -> str:
        """mlperf.conf's model name for the run's settings (llama3_1-8b-interactive for Interactive)."""
        return benchmarks.get(self.benchmark).conf_model + scenarios.get(self.scenario).conf_suffix

    @property
    def host(self) -> dict:
        """The coordinator's machine (common.host_info), which ran the agents on its node."""
        return self.results["system"]

    @property
    def llmbench(self) -> str | None:
        return self.host["packages"].get("llmbench")

    @property
    def agents(self) -> list[Agent]:
        found = []
        for a in self.results["agents"]:
            p = a.get("precision") or {}
            found.append(Agent(a["address"], a.get("node") or "", a.get("device") or "", a.get("model") or "",
                               a.get("engine") or "", p.get("dtype") or "", p.get("quantization") or "none",
                               p.get("kv_cache_dtype") or p.get("dtype") or "", a.get("memory_total_bytes") or 0))
        return found

    @property
    def settings_changes(self) -> list[str]:
        return list(self.run.get("settings_changes") or [])

    @property
    def demo_scaled(self) -> bool:
        return any(DEMO_REASON in change for change in self.settings_changes)

    @property
    def command(self) -> str:
        """The command line, where results.json records it; else the flags that name this run."""
        if self.run.get("command"):
            return self.run["command"]
        flags = ["--benchmark", self.benchmark, "--scenario", self.scenario, "--mode", self.run["mode"]]
        flags += ["--compliance", TEST06] if self.kind == TEST06 else []
        return shlex.join(["llmbench", "coordinator", *flags]) + "  # with the settings below"

    @property
    def accuracy_passed(self) -> bool | None:
        return self.results["accuracy"]["passed"]

    @property
    def compliance_passed(self) -> bool | None:
        return self.results["compliance"]["passed"]

    def file(self, name: str) -> Path:
        return self.path / name


def _need(path: Path, names: list[str], why: str) -> None:
    missing = [n for n in names if not (path / n).is_file()]
    if missing:
        raise ValueError(f"{path}: no {', '.join(missing)} ({why})")


def read(path: Path) -> RunFolder:
    """The run folder at `path`; ValueError naming what a submission needs that it lacks."""
    if not path.is_dir():
        raise ValueError(f"{path} is not a run folder (no such folder)")
    _need(path, [SUMMARY_FILE, DETAIL_FILE], "not a finished llmbench run: LoadGen's logs are missing")
    results = read_results(path, "build from")
    missing = [k for k in RESULTS_KEYS if k not in results]
    if missing:
        raise ValueError(f"{path / RESULTS_FILE} is no llmbench results.json this llmbench reads: no "
                         f"{', '.join(missing)}")
    detail: dict = {}
    audited = False
    for r in records(path):
        detail[r.get("key")] = r.get("value")
        audited = audited or AUDITED in str(r.get("value"))
    run = RunFolder(path, results, detail, audited)
    if run.kind == ACCURACY:
        _need(path, [ACCURACY_LOG, ACCURACY_FILE], "an accuracy run needs its outputs scored: run it with a dataset "
              "that has reference summaries and --tokenizer")
    if run.kind == TEST06:
        _need(path, [ACCURACY_LOG, VERIFY_FILE], "a TEST06 run leaves its logged responses and its verdict")
    return run
