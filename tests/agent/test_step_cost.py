"""The step cost model: step shapes read from real batches, floors from the roofline, and what the
engine records for every step it runs (tiny model on CPU)."""
from __future__ import annotations

import pytest

from llmbench.agent.model.config import ModelConfig
from llmbench.agent.engine.paged import PagedEngine
from llmbench.agent.engine.in_process import generate
from llmbench.agent.server.metrics import step_families
from llmbench.agent.engine.scheduler import Batch, Sequence
from llmbench.agent.engine.step_cost import Rates, StepCosts, StepShape, floor_seconds
from llmbench.agent.engine.types import EngineConfig, Request
from llmbench.common.prometheus import render
from prometheus_text import histogram, parse


def seq(prompt_len: int, cached: int, generated: int = 0) -> Sequence:
    s = Sequence(Request(id=prompt_len, prompt=[1] * prompt_len, max_new_tokens=8), None, (), 4)
    s.tokens += [2] * generated
    s.num_cached = cached
    return s


def test_a_mixed_batch_counts_rows_sampled_rows_kv_reads_and_pairs():
    a, b = seq(10, 4), seq(6, 0)  # a continues its prompt at 4 (finishing it), b starts (not finishing)
    d = seq(5, 7, generated=3)  # decoding: context 8
    shape = StepShape.of(Batch(prefill=[(a, 6), (b, 3)], decode=[d]))
    assert (shape.tokens, shape.decode, shape.sampled) == (10, 1, 2)
    assert shape.kv_read == 8 + (4 + 6) + (0 + 3)
    assert shape.pairs == 8 + (6 * 4 + 21) + 6
    assert (shape.kind, shape.bucket) == ("mixed", 512)
    only = StepShape.of(Batch(decode=[d] * 40))
    assert (only.kind, only.bucket, only.sampled) == ("decode", 128, 40)


def test_floor_is_the_slower_side_of_each_kernel_class():
    mc = ModelConfig(vocab_size=100, hidden_size=8, intermediate_size=16, num_layers=2, num_heads=2,
                     num_kv_heads=1, head_dim=4, max_position=64)
    shape = StepShape(tokens=1, decode=1, sampled=1, kv_read=1000, pairs=1000)
    slow_memory = floor_seconds(mc, shape, Rates(matmul=1e12, layer_matmul=1e12, read=1.0), layer_bytes=10,
                                head_bytes=20, kv_bytes_per_token=3)
    assert slow_memory == pytest.approx(10 + 20 + 3000, rel=1e-6)  # bytes at 1 B/s; FLOPs cost ~nothing
    slow_compute = floor_seconds(mc, shape, Rates(matmul=1.0, layer_matmul=2.0, read=1e12), layer_bytes=10,
                                 head_bytes=20, kv_bytes_per_token=3)
    layer_flops = 2 * 2 * (8 * (8 + 8) + 8 * 8 + 3 * 8 * 16)
    assert slow_compute == pytest.approx(layer_flops / 2 + 2 * 8 * 100 + 4 * 8 * 2 * 1000, rel=1e-6)


def test_the_engine_records_every_step_with_device_time_within_wall_time():
    engine = PagedEngine(EngineConfig(model="tiny", device="cpu", max_batch=8, max_step_tokens=64,
                                      num_kv_blocks=64))
    engine.start()
    try:
        prompts = [[1] + [5 + i] * (20 + 30 * i) for i in range(4)]  # 21..111 tokens: chunked at 64
        generate(engine, [Request(id=i, prompt=p, max_new_tokens=6, ignore_eos=True) for i, p in enumerate(prompts)])
        steps = engine.step_costs.snapshot()
        assert {kind for kind, _ in steps} == {"mixed", "decode"}
        assert sum(s.steps for s in steps.values()) == engine.stats().steps_total
        assert sum(s.tokens for s in steps.values()) == sum(map(len, prompts)) + 4 * (6 - 1)
        assert all(0 < s.device <= s.wall for s in steps.values())
        assert all(s.floor == 0 for s in steps.values())  # no rates were measured
        rows = engine.step_costs.table()
        assert rows[0].startswith("| step kind |") and rows[-1].startswith("| all |") and "n/a" in rows[-1]
        # The agent exports the same steps for Prometheus: a histogram per kind, wall and device seconds.
        types, samples = parse(render(step_families(engine.step_costs, {"agent": "a"})))
        assert types == {"llmbench_agent_step_seconds": "histogram", "llmbench_agent_step_device_seconds": "histogram"}
        for kind in ("decode", "mixed"):
            of_kind = [sums for (k, _), sums in steps.items() if k == kind]
            _, wall, count = histogram(samples, "llmbench_agent_step_seconds", agent="a", kind=kind)
            assert count == sum(s.steps for s in of_kind) and wall == pytest.approx(sum(s.wall for s in of_kind))
            _, device, _ = histogram(samples, "llmbench_agent_step_device_seconds", agent="a", kind=kind)
            assert device == pytest.approx(sum(s.device for s in of_kind))
    finally:
        engine.stop()


def test_a_floor_set_on_the_costs_is_summed_per_bucket():
    costs = StepCosts()
    costs.floor = lambda shape: 0.001 * shape.tokens
    costs.record(StepShape(tokens=100, decode=0, sampled=1, kv_read=0, pairs=0), wall_s=0.2, device_s=0.15)
    costs.record(StepShape(tokens=300, decode=0, sampled=1, kv_read=0, pairs=0), wall_s=0.6, device_s=0.5)
    (key, sums), = costs.snapshot().items()
    assert key == ("mixed", 512) and sums.steps == 2 and sums.floor == pytest.approx(0.4)
    assert costs.table()[2] == "| mixed | ≤ 512 tokens | 2 | 400.00 | 325.00 | 75.00 | 200.00 | 2.00× |"
