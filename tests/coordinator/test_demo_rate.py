"""The demo's Server/Interactive rate is measured on the agents at hand, not fixed for an idle 2-core box
(where a busy box made the default `llmbench run` INVALID): a short Offline probe, then a share of its rate."""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from llmbench.coordinator.loadgen import settings
from llmbench.coordinator.run import demo_rate
from llmbench.coordinator.run.session import CoordinatorConfig


def demo_config(agents, output: Path, **changes) -> CoordinatorConfig:
    cfg = CoordinatorConfig(agents=",".join(a.address for a in agents), output=output, scenario="Server",
                            max_samples=settings.DEMO.samples, demo=settings.DEMO, progress_s=0)
    return dataclasses.replace(cfg, **changes)


def test_the_demo_rate_is_a_share_of_what_the_agents_complete(sim_agents, tmp_path):
    said: list[str] = []
    timings: dict[str, float] = {}
    left_before = set(Path(tempfile.gettempdir()).glob("llmbench-probe-*"))
    cfg = demo_rate.sized(demo_config(sim_agents, tmp_path / "out"), said.append, timings)
    rate, why = cfg.demo.target_qps, cfg.demo.rate_why
    offline = float(why.split(" of the ")[1].split(" samples/s")[0])
    assert offline > 0 and rate == max(round(offline * demo_rate.SHARE["Server"], 2), 0.1), why
    assert said[-1] == f"Demo rate: {rate:g} QPS, {why.removeprefix('demo: ')}"
    assert timings["demo rate probe"] > 0
    assert not (tmp_path / "out").exists()  # the probe's files are not the run's
    assert set(Path(tempfile.gettempdir()).glob("llmbench-probe-*")) == left_before
    interactive = demo_rate.sized(demo_config(sim_agents, tmp_path / "i", scenario="Interactive"), said.append)
    assert interactive.demo.rate_why.startswith(f"demo: {demo_rate.SHARE['Interactive']:g} of the ")


def test_no_probe_where_the_rate_is_given_or_does_not_matter(tmp_path):
    """Nothing is contacted (the agent address is unreachable): these configs come back as they were."""
    class Nowhere:
        address = "127.0.0.1:9"
    for changes in ({"target_qps": 3.0}, {"scenario": "Offline"}, {"mode": "accuracy"}, {"demo": None},
                    {"compliance": "TEST06"}, {"scenario": "SingleStream", "benchmark": "llama3.1-8b-edge"}):
        cfg = demo_config([Nowhere()], tmp_path, **changes)
        assert demo_rate.sized(cfg, print) is cfg, changes
