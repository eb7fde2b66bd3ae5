"""LoadGen TestSettings: MLPerf's mlperf.conf for the benchmark and scenario, the demo scale if asked,
user.conf, flags.

mlperf.conf is embedded in LoadGen 6.x: `FromConfig(path, model, scenario, 0)` ignores the path and
loads the embedded copy; `FromConfig(user_conf, model, scenario, 1)` reads a user.conf file.
Every value that ends up different from mlperf.conf is listed in `BenchSettings.changes` with the
reason, so a scaled-down run is always shown as such.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import mlperf_loadgen as lg

from llmbench.coordinator.loadgen import benchmarks, scenarios, user_conf as user_conf_lines
from llmbench.coordinator.loadgen.benchmarks import Benchmark
from llmbench.coordinator.loadgen.early_stopping import SERVER_QUERIES
from llmbench.coordinator.loadgen.scenarios import Scenario

MODES = {"performance": lg.TestMode.PerformanceOnly, "accuracy": lg.TestMode.AccuracyOnly}
OFFLINE_QUERY_SLACK = 1.1  # LoadGen sizes the Offline query as expected_qps * min_duration * 1.1
SINGLE_STREAM_SLACK = 2.0  # LoadGen plans SingleStream queries for 2 * min_duration at the expected latency
MAX_DURATION_S = 86_400.0  # a LoadGen test longer than a day is a mistake in the flags
MAX_QPS = 1e6
DEMO_LATENCY_QUERIES = 600  # a measured demo rate runs this many queries, above what early stopping needs


@dataclass(frozen=True)
class DemoScale:
    """Settings small enough for a few-minute run on CPU that can still be VALID: the scenario table's
    demo row of the scenario (scenarios.py says what each was measured at), over a small dataset.
    Every value is listed in BenchSettings.changes with its reason."""
    # Dataset size when none is given: LoadGen issues whole permutations of the performance set
    # (sample_concatenate_permutation), so a small set keeps the rounding small.
    samples: int = 100
    # Server/Interactive: the rate measured for the agents at hand (run/demo_rate.py) in place of the
    # scenario table's, with why; None keeps the table's.
    target_qps: float | None = None
    rate_why: str = ""


DEMO = DemoScale()

# (TestSettings attribute, label, whether a scenario shows it)
_TRACKED = (
    ("min_duration_ms", "min_duration (ms)", lambda s: True),
    ("min_query_count", "min_query_count", lambda s: True),
    ("max_duration_ms", "max_duration (ms)", lambda s: True),
    ("max_query_count", "max_query_count", lambda s: True),
    ("server_target_qps", "target_qps", lambda s: s.rate_setting == "server_target_qps"),
    ("offline_expected_qps", "expected_qps", lambda s: s.rate_setting == "offline_expected_qps"),
    ("single_stream_expected_latency_ns", "expected_latency (ns)", lambda s: s.arrival == scenarios.ONE_AT_A_TIME),
    ("ttft_latency", "ttft_latency (ns)", lambda s: s.latency_limits),
    ("tpot_latency", "tpot_latency (ns)", lambda s: s.latency_limits),
    ("performance_sample_count_override", "performance_sample_count", lambda s: True),
    ("use_token_latencies", "use_token_latencies", lambda s: True),
)


@dataclass
class BenchSettings:
    test: lg.TestSettings
    benchmark: Benchmark
    scenario: str  # ours: one of the benchmark's
    mode: str
    model: str  # mlperf.conf's model name
    changes: list[str] = field(default_factory=list)  # "label: value (mlperf.conf: base) - why"

    @property
    def spec(self) -> Scenario:
        """The scenario's row of the scenario table."""
        return scenarios.get(self.scenario)

    @property
    def performance_sample_count(self) -> int:
        return int(self.test.performance_sample_count_override)

    def expected_queries(self, sample_count: int) -> int:
        """About how many queries LoadGen will issue (for progress and ETA)."""
        t = self.test
        if self.mode == "accuracy":
            return sample_count
        per = max(self.performance_sample_count, 1)
        duration_s = t.min_duration_ms / 1000
        if self.spec.arrival == scenarios.ONE_AT_A_TIME:
            # LoadGen (test_settings_internal.cc) plans 2 x min_duration at the expected latency, at least
            # min_query_count; with sample_concatenate_permutation it adds the rest of a pass over the
            # performance set, a whole pass when the count already is a multiple.
            n = max(int(t.min_query_count),
                    int(SINGLE_STREAM_SLACK * duration_s * 1e9 / t.single_stream_expected_latency_ns))
            return n + per - n % per if t.sample_concatenate_permutation else n
        rate = getattr(t, self.spec.rate_setting) * duration_s
        # Offline: one query of expected_qps x min_duration x slack samples; Server: a rate for min_duration.
        n = max(int(t.min_query_count), int(rate * OFFLINE_QUERY_SLACK if self.spec.arrival == scenarios.ONE_QUERY
                                            else rate))
        if t.sample_concatenate_permutation:  # whole permutations of the performance set
            n = -(-n // per) * per
        return n

    def describe(self) -> list[str]:
        t = self.test
        lines = [f"LoadGen settings: benchmark {self.benchmark.name}, model {self.model}, scenario {self.scenario}, "
                 f"mode {self.mode}"]
        for attr, label, shown in _TRACKED:
            if shown(self.spec):
                lines.append(f"  {label}: {_value(getattr(t, attr))}")
        return lines


def _value(v) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, float):
        return f"{v:.12g}"  # 250000000, not 2.5e+08
    return str(v)


def _snapshot(t: lg.TestSettings) -> dict:
    return {attr: getattr(t, attr) for attr, _, _ in _TRACKED}


def build(scenario: str, mode: str, *, sample_count: int, benchmark: str = benchmarks.DEFAULT.name,
          user_conf: str | None = None, target_qps: float | None = None, duration_s: float | None = None,
          min_query_count: int | None = None, demo: DemoScale | None = None,
          audit: Sequence[tuple[str, object, str]] = ()) -> BenchSettings:
    """TestSettings for one run. sample_count is the dataset size (the QSL's total). audit: (TestSettings
    attribute, value, why) an audit.config sets over everything else (LoadGen reads it last)."""
    bench = benchmarks.get(benchmark)
    spec = bench.scenario(scenario)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    if sample_count < 1:
        raise ValueError("the dataset has no samples")
    lg_scenario = spec.loadgen
    model = bench.conf_model + spec.conf_suffix
    t = lg.TestSettings()
    t.scenario = getattr(lg.TestScenario, lg_scenario)
    t.FromConfig("", model, lg_scenario, 0)  # LoadGen's embedded mlperf.conf
    base = _snapshot(t)
    reasons: dict[str, str] = {}

    def set_(attr: str, value, why: str) -> None:
        setattr(t, attr, value)
        reasons[attr] = why

    if demo is not None:
        for override in spec.demo:
            set_(override.setting, override.value, override.why)
        if demo.target_qps is not None and spec.latency_limits and spec.rate_setting is not None:
            set_(spec.rate_setting, demo.target_qps, demo.rate_why)
            seconds = max(t.min_duration_ms / 1000, DEMO_LATENCY_QUERIES / demo.target_qps)
            set_("min_duration_ms", math.ceil(seconds) * 1000,
                 f"demo: {DEMO_LATENCY_QUERIES} queries at that rate, enough for LoadGen's p99 early stopping "
                 f"({SERVER_QUERIES} needed)")
    if user_conf is not None:
        if not Path(user_conf).is_file():
            raise FileNotFoundError(f"user.conf {user_conf} does not exist")
        bad = user_conf_lines.problems(Path(user_conf), model, lg_scenario)
        if bad:
            raise ValueError(f"user.conf {user_conf}: " + "; ".join(bad))
        before = _snapshot(t)
        if t.FromConfig(str(user_conf), model, lg_scenario, 1) != 0:
            raise ValueError(f"LoadGen could not read user.conf {user_conf}")
        reasons.update({a: f"from {user_conf}" for a, v in _snapshot(t).items() if v != before[a]})
    if target_qps is not None:
        if spec.rate_setting is None:
            raise ValueError(f"--target-qps: {spec.name} has no target rate, LoadGen issues each query once the one "
                             f"before has completed (its expected latency, that sizes the test, goes in --user-conf: "
                             f"*.{spec.loadgen}.target_latency = MS)")
        if not (math.isfinite(target_qps) and 0 < target_qps <= MAX_QPS):
            raise ValueError(f"--target-qps must be positive and at most {MAX_QPS:g}, got {target_qps:g}")
        set_(spec.rate_setting, float(target_qps), "--target-qps")
    if duration_s is not None:
        if not (math.isfinite(duration_s) and 0 < duration_s <= MAX_DURATION_S):
            raise ValueError(f"--duration must be positive and at most {MAX_DURATION_S:g} s (a day), "
                             f"got {duration_s:g}")
        set_("min_duration_ms", int(duration_s * 1000), "--duration")
    if min_query_count is not None:
        set_("min_query_count", int(min_query_count), "sized to the dataset (--max-samples)")
    if t.performance_sample_count_override == 0 or t.performance_sample_count_override > sample_count:
        set_("performance_sample_count_override", sample_count, f"the dataset has {sample_count} samples")
    for attr, value, why in audit:
        set_(attr, type(getattr(t, attr))(value), why)
    t.mode = MODES[mode]
    settings = BenchSettings(test=t, benchmark=bench, scenario=spec.name, mode=mode, model=model)
    for attr, label, shown in _TRACKED:
        now = getattr(t, attr)
        if now != base[attr] and shown(spec):
            settings.changes.append(f"{label}: {_value(now)} (mlperf.conf: {_value(base[attr])}) - "
                                    f"{reasons.get(attr, 'changed')}")
    return settings
