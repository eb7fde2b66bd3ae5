"""LoadGen TestSettings: MLPerf's mlperf.conf for llama3_1-8b, the demo scale if asked, user.conf, flags.

mlperf.conf is embedded in LoadGen 6.x: `FromConfig(path, model, scenario, 0)` ignores the path and
loads the embedded copy; `FromConfig(user_conf, model, scenario, 1)` reads a user.conf file.
Every value that ends up different from mlperf.conf is listed in `BenchSettings.changes` with the
reason, so a scaled-down run is always shown as such.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import mlperf_loadgen as lg

from llmbench.coordinator.loadgen import scenarios
from llmbench.coordinator.loadgen.scenarios import Scenario

MODEL = "llama3_1-8b"
MODES = {"performance": lg.TestMode.PerformanceOnly, "accuracy": lg.TestMode.AccuracyOnly}
OFFLINE_QUERY_SLACK = 1.1  # LoadGen sizes the Offline query as expected_qps * min_duration * 1.1
MAX_DURATION_S = 86_400.0  # a LoadGen test longer than a day is a mistake in the flags
MAX_QPS = 1e6
LATENCY_PERCENTILE = 0.99  # Server and Interactive: the TTFT and TPOT limits hold at p99
EARLY_STOPPING_CONFIDENCE = 0.99  # LoadGen's early-stopping estimate


def early_stopping_queries(percentile: float = LATENCY_PERCENTILE,
                           confidence: float = EARLY_STOPPING_CONFIDENCE) -> int:
    """The fewest queries with which LoadGen's early stopping can call a latency bound met: with none over
    the limit, percentile**n must fall below 1 - confidence (459 for p99; more when some are over)."""
    return math.ceil(math.log(1 - confidence) / math.log(percentile))


@dataclass(frozen=True)
class DemoScale:
    """Settings small enough for a few-minute run on CPU that can still be VALID.

    Server: LoadGen's early stopping at p99 needs 459 queries with none over the limits, so
    target_qps * min_duration must stay well above that (600+). Offline: one query of
    expected_qps * min_duration * 1.1 samples; expected_qps above the real rate keeps the run
    longer than min_duration. Measured on 2 CPU cores with two tiny-model agents: Offline 12-27
    samples/s (50 x 20 s x 1.1 = 1,100 samples: 40-90 s); Server at 8 QPS p99 TTFT 0.8 s, TPOT
    12 ms, at 7 QPS 0.2-0.3 s and 3-4 ms. Every value is listed in BenchSettings.changes with its reason."""
    server_target_qps: float = 7.0
    offline_expected_qps: float = 50.0
    min_duration_s: float = 80.0
    offline_min_duration_s: float = 20.0
    min_query_count: int = 100
    # Dataset size when none is given: LoadGen issues whole permutations of the performance set
    # (sample_concatenate_permutation), so a small set keeps the rounding small: 7 QPS x 80 s is
    # ~561 queries, rounded up to 600 (~86 s).
    samples: int = 100

    def overrides(self, scenario: Scenario) -> list[tuple[str, object, str]]:
        """(TestSettings attribute, value, why) for the scenario."""
        if scenario.latency_bound:
            queries = self.server_target_qps * self.min_duration_s
            return [
                ("server_target_qps", self.server_target_qps,
                 "demo: a rate small CPU agents serve within the TTFT/TPOT limits"),
                ("min_duration_ms", int(self.min_duration_s * 1000),
                 f"demo: minutes, not 10; still ~{queries:.0f} queries (LoadGen rounds to whole passes over "
                 f"the samples), enough for LoadGen's p99 early stopping ({early_stopping_queries()} needed)"),
                ("min_query_count", self.min_query_count, "demo")]
        return [
            ("offline_expected_qps", self.offline_expected_qps,
             "demo: sizes LoadGen's one Offline query (expected_qps x min_duration x 1.1) above what "
             "small CPU agents finish within min_duration"),
            ("min_duration_ms", int(self.offline_min_duration_s * 1000), "demo: seconds, not 10 minutes"),
            ("min_query_count", self.min_query_count, "demo: not the whole 13,368-sample set")]


DEMO = DemoScale()

# (TestSettings attribute, label, whether a scenario shows it)
_TRACKED = (
    ("min_duration_ms", "min_duration (ms)", lambda s: True),
    ("min_query_count", "min_query_count", lambda s: True),
    ("max_duration_ms", "max_duration (ms)", lambda s: True),
    ("max_query_count", "max_query_count", lambda s: True),
    ("server_target_qps", "target_qps", lambda s: s.rate_setting == "server_target_qps"),
    ("offline_expected_qps", "expected_qps", lambda s: s.rate_setting == "offline_expected_qps"),
    ("ttft_latency", "ttft_latency (ns)", lambda s: s.latency_bound),
    ("tpot_latency", "tpot_latency (ns)", lambda s: s.latency_bound),
    ("performance_sample_count_override", "performance_sample_count", lambda s: True),
    ("use_token_latencies", "use_token_latencies", lambda s: True),
)


@dataclass
class BenchSettings:
    test: lg.TestSettings
    scenario: str  # ours: Offline, Server or Interactive
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
        rate = getattr(t, self.spec.rate_setting) * t.min_duration_ms / 1000
        # Offline: one query of expected_qps x min_duration x slack samples; Server: a rate for min_duration.
        n = max(int(t.min_query_count), int(rate if self.spec.latency_bound else rate * OFFLINE_QUERY_SLACK))
        if t.sample_concatenate_permutation:  # whole permutations of the performance set
            per = max(self.performance_sample_count, 1)
            n = -(-n // per) * per
        return n

    def describe(self) -> list[str]:
        t = self.test
        lines = [f"LoadGen settings: model {self.model}, scenario {self.scenario}, mode {self.mode}"]
        for attr, label, shown in _TRACKED:
            if shown(self.spec):
                lines.append(f"  {label}: {_value(getattr(t, attr))}")
        return lines


def _value(v) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _snapshot(t: lg.TestSettings) -> dict:
    return {attr: getattr(t, attr) for attr, _, _ in _TRACKED}


def build(scenario: str, mode: str, *, sample_count: int, user_conf: str | None = None,
          target_qps: float | None = None, duration_s: float | None = None,
          min_query_count: int | None = None, demo: DemoScale | None = None,
          model: str = MODEL) -> BenchSettings:
    """TestSettings for one run. sample_count is the dataset size (the QSL's total)."""
    spec = scenarios.get(scenario)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    if sample_count < 1:
        raise ValueError("the dataset has no samples")
    lg_scenario = spec.loadgen
    model += spec.conf_suffix
    t = lg.TestSettings()
    t.scenario = getattr(lg.TestScenario, lg_scenario)
    t.FromConfig("", model, lg_scenario, 0)  # LoadGen's embedded mlperf.conf
    base = _snapshot(t)
    reasons: dict[str, str] = {}

    def set_(attr: str, value, why: str) -> None:
        setattr(t, attr, value)
        reasons[attr] = why

    if demo is not None:
        for attr, value, why in demo.overrides(spec):
            set_(attr, value, why)
    if user_conf is not None:
        if not Path(user_conf).is_file():
            raise FileNotFoundError(f"user.conf {user_conf} does not exist")
        before = _snapshot(t)
        if t.FromConfig(str(user_conf), model, lg_scenario, 1) != 0:
            raise ValueError(f"LoadGen could not read user.conf {user_conf}")
        reasons.update({a: f"from {user_conf}" for a, v in _snapshot(t).items() if v != before[a]})
    if target_qps is not None:
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
    t.mode = MODES[mode]
    settings = BenchSettings(test=t, scenario=scenario, mode=mode, model=model)
    for attr, label, shown in _TRACKED:
        now = getattr(t, attr)
        if now != base[attr] and shown(spec):
            settings.changes.append(f"{label}: {_value(now)} (mlperf.conf: {_value(base[attr])}) - "
                                    f"{reasons.get(attr, 'changed')}")
    return settings
