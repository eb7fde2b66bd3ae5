"""The scenario table: one definition per scenario `--scenario` takes, that every other module asks.

"Interactive" is MLPerf's interactive Server variant: LoadGen's Server scenario under mlperf.conf's
llama3_1-8b-interactive settings (TTFT 500 ms, TPOT 30 ms). LoadGen's own logs name only its scenario
(`by_loadgen`).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["INTERACTIVE", "OFFLINE", "SCENARIOS", "SERVER", "Scenario", "by_loadgen", "get"]


@dataclass(frozen=True)
class Scenario:
    name: str  # what --scenario takes
    loadgen: str  # LoadGen's TestScenario (and the scenario its logs and the submission checker name)
    conf_suffix: str  # appended to mlperf.conf's model name for this scenario's settings
    rate_setting: str  # the TestSettings attribute --target-qps sets
    rate_label: str  # that setting in LoadGen's summary
    latency_bound: bool  # queries arrive at a rate and TTFT/TPOT limits hold (first tokens are reported)


OFFLINE = Scenario("Offline", "Offline", "", "offline_expected_qps", "expected_qps", latency_bound=False)
SERVER = Scenario("Server", "Server", "", "server_target_qps", "target_qps", latency_bound=True)
INTERACTIVE = Scenario("Interactive", "Server", "-interactive", "server_target_qps", "target_qps", latency_bound=True)
SCENARIOS = {s.name: s for s in (OFFLINE, SERVER, INTERACTIVE)}


def get(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}: use one of {', '.join(SCENARIOS)}") from None


def by_loadgen(loadgen_name: str) -> Scenario | None:
    """The first of our scenarios LoadGen runs under that name (Server for "Server"); None if none."""
    return next((s for s in SCENARIOS.values() if s.loadgen == loadgen_name), None)
