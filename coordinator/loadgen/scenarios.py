"""The scenario table: one definition per scenario `--scenario` takes, that every other module asks.

Each row says, for its users, what LoadGen runs (its scenario, and how it issues queries), whether the
SUT reports first tokens, which setting --target-qps sets, whether TTFT/TPOT limits hold, the demo
scale and the name MLPerf's submission checker gives it. Which benchmark runs which scenario is the
benchmark table's (benchmarks.py).

"Interactive" is MLPerf's interactive Server variant: LoadGen's Server scenario under mlperf.conf's
llama3_1-8b-interactive settings (TTFT 500 ms, TPOT 30 ms). LoadGen's own logs name only its scenario
(`by_loadgen`).
"""
from __future__ import annotations

from dataclasses import dataclass

from llmbench.coordinator.loadgen.early_stopping import SERVER_QUERIES, SINGLE_STREAM_QUERIES

__all__ = ["AT_RATE", "INTERACTIVE", "OFFLINE", "ONE_AT_A_TIME", "ONE_QUERY", "SCENARIOS", "SERVER", "SINGLE_STREAM",
           "Override", "Scenario", "by_loadgen", "get"]

# How LoadGen issues a scenario's queries: what its test length and its query count follow.
ONE_QUERY = "one query"  # Offline: every sample in one query at the start
AT_RATE = "at a rate"  # Server: Poisson arrivals at the target QPS, whatever the agents' pace
ONE_AT_A_TIME = "one at a time"  # SingleStream: each query once the one before has completed


@dataclass(frozen=True)
class Override:
    """One TestSettings value the demo scale sets, and why."""
    setting: str  # the TestSettings attribute
    value: float | int
    why: str


@dataclass(frozen=True)
class Scenario:
    name: str  # what --scenario takes
    loadgen: str  # LoadGen's TestScenario (and the scenario its logs name)
    checker: str  # MLPerf's submission checker's name: its results/<system>/<benchmark>/<checker>/ folder
    conf_suffix: str  # appended to mlperf.conf's model name for this scenario's settings
    arrival: str  # how LoadGen issues the queries: ONE_QUERY, AT_RATE or ONE_AT_A_TIME
    rate_setting: str | None  # the TestSettings attribute --target-qps sets; None: the scenario has no rate
    reports_first_tokens: bool  # the SUT reports each first token (FirstTokenComplete): LoadGen measures TTFT
    latency_limits: bool  # LoadGen judges TTFT/TPOT p99 against mlperf.conf's ttft_latency/tpot_latency
    demo: tuple[Override, ...]  # the demo scale (settings.DemoScale): a CPU run of minutes that can be VALID


# Demo scale, measured on 2 CPU cores with two tiny-model agents (llmbench run).
# Offline: one query of expected_qps x min_duration x 1.1 samples; expected_qps above the real rate
# (12-27 samples/s) keeps the run longer than min_duration: 50 x 20 s x 1.1 = 1,100 samples, 40-90 s.
_OFFLINE_DEMO = (
    Override("offline_expected_qps", 50.0, "demo: sizes LoadGen's one Offline query (expected_qps x min_duration x "
                                           "1.1) above what small CPU agents finish within min_duration"),
    Override("min_duration_ms", 20_000, "demo: seconds, not 10 minutes"),
    Override("min_query_count", 100, "demo: not the benchmark's whole dataset"),
)
# Server and Interactive: the demo's performance runs measure their rate (run/demo_rate.py); this row
# is for its accuracy and TEST06 runs, where latency is not judged. LoadGen's p99 early stopping needs
# 459 queries with none over the limits, so
# target_qps x min_duration must stay well above that (600+). At 8 QPS p99 TTFT was 0.8 s and TPOT
# 12 ms, at 7 QPS 0.2-0.3 s and 3-4 ms (Interactive's limits: 500 ms, 30 ms). 7 QPS x 80 s is ~561
# queries, rounded up to 600 (~86 s) over the demo's 100 samples.
_DEMO_QPS, _DEMO_SECONDS = 7.0, 80
_LATENCY_LIMITS_DEMO = (
    Override("server_target_qps", _DEMO_QPS, "demo: a rate small CPU agents serve within the TTFT/TPOT limits"),
    Override("min_duration_ms", _DEMO_SECONDS * 1000,
             f"demo: minutes, not 10; still ~{_DEMO_QPS * _DEMO_SECONDS:.0f} queries (LoadGen rounds to whole passes "
             f"over the samples), enough for LoadGen's p99 early stopping ({SERVER_QUERIES} needed)"),
    Override("min_query_count", 100, "demo"),
)
# SingleStream: LoadGen plans max(min_query_count, 2 x min_duration / expected latency) queries plus the
# rest of a pass over the samples (a whole pass when already a multiple), issues them all one after
# another, and calls the run VALID once the last starts after min_duration. A tiny-model query takes
# 0.15-0.4 s: mlperf.conf's min_query_count 100 plus a pass over the demo's 100 samples, 200 queries at
# about 0.25 s, is ~50 s, VALID for any agent that takes 50 ms or more a query.
_SINGLE_STREAM_SECONDS = 10
_SINGLE_STREAM_DEMO = (
    Override("single_stream_expected_latency_ns", 250_000_000,
             f"demo: about one tiny-model query on CPU; LoadGen plans 2 x min_duration of queries at this latency "
             f"(at mlperf.conf's 10 ms, {2 * _SINGLE_STREAM_SECONDS / 0.010:,.0f} of them)"),
    Override("min_duration_ms", _SINGLE_STREAM_SECONDS * 1000,
             f"demo: seconds, not 10 minutes; min_query_count and a pass over the samples keep the run above the "
             f"{SINGLE_STREAM_QUERIES} queries LoadGen's p90 early stopping needs"),
)

OFFLINE = Scenario("Offline", "Offline", "Offline", "", ONE_QUERY, "offline_expected_qps",
                   reports_first_tokens=False, latency_limits=False, demo=_OFFLINE_DEMO)
SERVER = Scenario("Server", "Server", "Server", "", AT_RATE, "server_target_qps",
                  reports_first_tokens=True, latency_limits=True, demo=_LATENCY_LIMITS_DEMO)
INTERACTIVE = Scenario("Interactive", "Server", "Interactive", "-interactive", AT_RATE, "server_target_qps",
                       reports_first_tokens=True, latency_limits=True, demo=_LATENCY_LIMITS_DEMO)
# SingleStream reports first tokens (mlperf.conf turns use_token_latencies on for llama3_1-8b-edge) but has
# no TTFT/TPOT limits: its result is LoadGen's 90th-percentile query latency.
SINGLE_STREAM = Scenario("SingleStream", "SingleStream", "SingleStream", "", ONE_AT_A_TIME, None,
                         reports_first_tokens=True, latency_limits=False, demo=_SINGLE_STREAM_DEMO)
SCENARIOS = {s.name: s for s in (OFFLINE, SERVER, INTERACTIVE, SINGLE_STREAM)}


def get(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}: use one of {', '.join(SCENARIOS)}") from None


def by_loadgen(loadgen_name: str) -> Scenario | None:
    """The first of our scenarios LoadGen runs under that name (Server for "Server"); None if none."""
    return next((s for s in SCENARIOS.values() if s.loadgen == loadgen_name), None)
