"""Queries carry their scenario's TPOT limit to the agents (which size their steps to it): Interactive's
30 ms and Server's 100 ms from mlperf.conf, none for Offline; kept when a query is re-dispatched."""
from __future__ import annotations

import asyncio

import pytest

from llmbench.coordinator.data import loaders
from llmbench.coordinator.loadgen import settings
from llmbench.coordinator.loadgen.sut import LoadGenSut
from llmbench.coordinator.mesh.job import Job
from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.proto import pb


class NoPool:
    listener = None


@pytest.mark.parametrize("scenario, limit_ms", [("Offline", 0.0), ("Server", 100.0), ("Interactive", 30.0)])
def test_each_query_carries_its_scenarios_tpot_limit(scenario, limit_ms):
    ds = loaders.load("synthetic", max_samples=4, vocab_size=1000)
    bench = settings.build(scenario, "performance", sample_count=len(ds))
    loop = asyncio.new_event_loop()
    try:
        sut = LoadGenSut(loop, NoPool(), ds, bench, RunMetrics())
        sut.load_samples([2])
        first = pb.Query.FromString(pb.Query(id=9).SerializeToString() + sut._wire_bodies[2])
    finally:
        loop.close()
    assert first.id == 9 and list(first.prompt_tokens) == ds.prompts[2].tolist()
    assert first.tpot_limit_ms == pytest.approx(limit_ms)
    resumed = Job(1, 2, ds.prompts[2], 128, 1, tpot_limit_ms=sut.tpot_limit_ms, tokens=[7, 8]).wire_query(10)
    assert resumed.tpot_limit_ms == pytest.approx(limit_ms) and resumed.max_new_tokens == 126
