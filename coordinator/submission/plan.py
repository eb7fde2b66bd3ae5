"""Which run folders make which result, and the refusals: one line saying why a set of runs is no
submission (demo-scaled settings, a performance run without its accuracy run, runs of different
llmbench versions, models or precisions, a TEST06 that failed, a performance run LoadGen called INVALID)."""
from __future__ import annotations

from dataclasses import dataclass

from llmbench.coordinator.loadgen import benchmarks
from llmbench.coordinator.submission.run_folder import ACCURACY, PERFORMANCE, TEST06, RunFolder

MLPERF_MIN_DURATION_MS = 600_000
TEST06_BENCHMARKS = ("llama3.1-8b",)  # the checker's models_TEST06 among ours (not llama3.1-8b-edge)
SIMULATED = "simulated"
# The checker's required scenarios (datacenter llama3.1-8b, edge llama3.1-8b-edge): each tuple, one of its.
REQUIRED_SCENARIOS = {"llama3.1-8b": (("Offline",), ("Server", "Interactive")),
                      "llama3.1-8b-edge": (("SingleStream",), ("Offline",))}


@dataclass
class Result:
    """One scenario's runs: what results/<system>/<benchmark>/<scenario>/ is built from."""
    scenario: str  # ours, which is also the checker's folder name
    performance: RunFolder
    accuracy: RunFolder
    test06: RunFolder | None


@dataclass
class Plan:
    benchmark: benchmarks.Benchmark
    results: list[Result]
    demo_reasons: list[str]  # why this is no valid submission; empty for one that can be

    @property
    def runs(self) -> list[RunFolder]:
        return [r for res in self.results for r in (res.performance, res.accuracy, res.test06) if r is not None]


def _one(values: dict[str, list[str]], what: str) -> None:
    if len(values) > 1:
        listed = "; ".join(f"{v}: {', '.join(folders)}" for v, folders in sorted(values.items()))
        raise ValueError(f"the runs mix {what} ({listed}): one submission result is one system's, build from runs "
                         f"of one")


def _by(runs: list[RunFolder], key) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for run in runs:
        found.setdefault(str(key(run)), []).append(str(run.path))
    return found


def demo_reasons(run: RunFolder, bench: benchmarks.Benchmark) -> list[str]:
    """Why this run's settings are not MLPerf's, from what LoadGen logged as well as from run.json."""
    where = f"{run.path}"
    reasons = []
    if run.demo_scaled:
        reasons.append(f"{where} ran at the demo scale (run it with --mlperf-settings)")
    if any(a.engine == SIMULATED for a in run.agents):
        reasons.append(f"{where} was served by the simulated engine (fake tokens, no model)")
    if run.kind == PERFORMANCE:
        duration = int(run.detail.get("effective_min_duration_ms") or 0)
        if duration < MLPERF_MIN_DURATION_MS:
            reasons.append(f"{where} min_duration {duration} ms < MLPerf's {MLPERF_MIN_DURATION_MS}")
        count = int(run.detail.get("effective_performance_sample_count") or 0)
        if count < bench.samples:
            reasons.append(f"{where} performance_sample_count {count} < {bench.name}'s {bench.samples}")
    if run.kind == ACCURACY:
        total = int(run.detail.get("qsl_reported_total_count") or 0)
        if total != bench.samples:
            reasons.append(f"{where} scored {total} samples, not {bench.name}'s whole {bench.samples}")
    return reasons


def _group(runs: list[RunFolder]) -> dict[str, dict[str, RunFolder]]:
    by_scenario: dict[str, dict[str, RunFolder]] = {}
    for run in runs:
        kinds = by_scenario.setdefault(run.scenario, {})
        if run.kind in kinds:
            raise ValueError(f"two {run.scenario} {run.kind} runs: {kinds[run.kind].path} and {run.path}; give one")
        kinds[run.kind] = run
    return by_scenario


def _result(scenario: str, kinds: dict[str, RunFolder], division: str, bench: benchmarks.Benchmark) -> Result:
    performance, accuracy, test06 = kinds.get(PERFORMANCE), kinds.get(ACCURACY), kinds.get(TEST06)
    if performance is None:
        given = ", ".join(str(r.path) for r in kinds.values())
        raise ValueError(f"{scenario}: no performance run, only {given}: a result needs its performance run")
    if accuracy is None:
        raise ValueError(f"{scenario}: the performance run {performance.path} has no accuracy run (--mode accuracy "
                         f"of the same scenario): a result needs both")
    if performance.detail.get("result_validity") != "VALID":
        raise ValueError(f"{scenario}: LoadGen's result of {performance.path} is "
                         f"{performance.detail.get('result_validity') or 'missing'}: not a result")
    needs_test06 = division == "closed" and bench.name in TEST06_BENCHMARKS
    if needs_test06 and test06 is None:
        raise ValueError(f"{scenario}: no TEST06 run (--compliance TEST06): the closed division's {bench.name} "
                         f"results need one per scenario")
    if test06 is not None and (test06.compliance_passed is not True or not test06.audited):
        raise ValueError(f"{scenario}: TEST06 failed in {test06.path} (see its verify_accuracy.txt and report.md): "
                         f"no result with a failed compliance test")
    return Result(scenario, performance, accuracy, test06)


def plan(runs: list[RunFolder], division: str) -> Plan:
    """The results these runs make; ValueError with the one reason they make none."""
    if not runs:
        raise ValueError("no run folders given")
    _one(_by(runs, lambda r: r.benchmark), "benchmarks")
    _one(_by(runs, lambda r: r.llmbench), "llmbench versions")
    _one(_by(runs, lambda r: sorted({a.precision for a in r.agents})),
         "models or precisions (model, engine, weights, GEMMs, KV cache)")
    _one(_by(runs, lambda r: r.detail.get("loadgen_version")), "LoadGen versions")
    bench = benchmarks.get(runs[0].benchmark)
    results = [_result(s, kinds, division, bench) for s, kinds in sorted(_group(runs).items())]
    reasons = [reason for run in runs for reason in demo_reasons(run, bench)]
    return Plan(bench, results, reasons)
