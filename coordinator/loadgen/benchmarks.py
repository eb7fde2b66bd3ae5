"""The benchmark table: one row per MLPerf benchmark `--benchmark` takes, beside the scenario table.

Values as MLPerf defines them: the model name of mlperf.conf (embedded in LoadGen), the dataset size and
the scenarios of the submission checker (submission_checker/constants.py: dataset-size and
performance-sample-count, required- and optional-scenarios), and the scores of MLPerf's reference
implementation (BF16 GPU run) that its accuracy targets derive from: accuracy-target is 99 % of each
ROUGE and 90 % of gen_len, accuracy-upper-limit 110 % of gen_len.
"""
from __future__ import annotations

from dataclasses import dataclass

from llmbench.coordinator.loadgen import scenarios as scenario_table
from llmbench.coordinator.loadgen.scenarios import INTERACTIVE, OFFLINE, SERVER, SINGLE_STREAM, Scenario

__all__ = ["BENCHMARKS", "DEFAULT", "LLAMA3_1_8B", "LLAMA3_1_8B_EDGE", "AccuracyReference", "Benchmark", "get"]


@dataclass(frozen=True)
class AccuracyReference:
    """The reference implementation's scores over the benchmark's whole dataset."""
    rouge: dict[str, float]  # rouge1, rouge2, rougeL, rougeLsum (F-measure x 100)
    gen_len: int  # total characters of the processed predictions


@dataclass(frozen=True)
class Benchmark:
    name: str  # MLPerf's and its submission checker's; what --benchmark takes
    conf_model: str  # mlperf.conf's model name, that LoadGen's settings are looked up by
    samples: int  # the whole dataset, every sample of it in LoadGen's performance set
    scenarios: tuple[Scenario, ...]  # the scenarios it runs; the first when --scenario is not given
    reference: AccuracyReference

    def scenario(self, name: str | None) -> Scenario:
        """Its scenario of that name (its first for None); the error says which benchmark runs it."""
        if name is None:
            return self.scenarios[0]
        spec = scenario_table.get(name)
        if spec not in self.scenarios:
            others = [b.name for b in BENCHMARKS.values() if spec in b.scenarios]
            raise ValueError(f"--scenario {name} needs --benchmark {' or '.join(others)} ({self.name} runs "
                             f"{', '.join(s.name for s in self.scenarios)})")
        return spec


LLAMA3_1_8B = Benchmark(
    "llama3.1-8b", "llama3_1-8b", 13_368, (SERVER, OFFLINE, INTERACTIVE),
    AccuracyReference({"rouge1": 38.7792, "rouge2": 15.9075, "rougeL": 24.4957, "rougeLsum": 35.793}, 8_167_644))
LLAMA3_1_8B_EDGE = Benchmark(
    "llama3.1-8b-edge", "llama3_1-8b-edge", 5_000, (SINGLE_STREAM, OFFLINE),
    AccuracyReference({"rouge1": 39.06, "rouge2": 16.1147, "rougeL": 24.6375, "rougeLsum": 36.124}, 3_051_113))
BENCHMARKS = {b.name: b for b in (LLAMA3_1_8B, LLAMA3_1_8B_EDGE)}
DEFAULT = LLAMA3_1_8B


def get(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}: use one of {', '.join(BENCHMARKS)}") from None
