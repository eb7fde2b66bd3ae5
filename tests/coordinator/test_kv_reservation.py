"""One KV reservation rule: what the paged engine and the simulated engine hold for a submitted query,
what the coordinator routes by and what preflight checks are the same number."""
from __future__ import annotations

import numpy as np
import pytest

from llmbench.agent.engine.paged import PagedEngine
from llmbench.agent.engine.simulated import SimulatedEngine
from llmbench.agent.engine.types import EngineConfig, Request
from llmbench.common.kv import kv_blocks, kv_tokens
from llmbench.coordinator.mesh.job import Job


@pytest.mark.parametrize("prompt_len, max_new", [(1, 1), (15, 2), (16, 1), (16, 2), (100, 128), (3, 30)])
def test_engines_and_coordinator_reserve_the_same_kv(prompt_len, max_new):
    assert kv_tokens(prompt_len, max_new) == prompt_len + max_new - 1  # the last token is never fed back
    job = Job(sample_id=0, index=0, prompt=np.ones(prompt_len, dtype=np.int32), max_new_tokens=max_new)
    assert job.kv_demand == kv_tokens(prompt_len, max_new)
    request = Request(id=1, prompt=[5] * prompt_len, max_new_tokens=max_new)
    for engine in (PagedEngine(EngineConfig(model="tiny", device="cpu", block_size=16)),
                   SimulatedEngine(EngineConfig(engine="simulated", block_size=16))):
        before = engine.stats().kv_tokens_available  # not started: the submitted query waits in the inbox
        engine.submit([request], lambda out: None)
        held = before - engine.stats().kv_tokens_available
        assert held == 16 * kv_blocks(prompt_len, max_new, 16) >= job.kv_demand, type(engine).__name__
