"""Steps sized to the decoding queries' TPOT limit: the online fit of step time against tokens, the budget
the scheduler takes from it, and the limit travelling from the wire into the engine (tiny model on CPU)."""
from __future__ import annotations

import math

import pytest

from llmbench.agent.engine.block_manager import BlockManager
from llmbench.agent.engine.in_process import generate
from llmbench.agent.engine.paged import PagedEngine
from llmbench.agent.engine.scheduler import Scheduler, Sequence
from llmbench.agent.engine.step_budget import FIRST_TOKENS, HEADROOM, MAX_STEP_S, MIN_PREFILL, MIN_STEPS, StepBudget
from llmbench.agent.engine.types import EngineConfig, ErrorCode, Request
from llmbench.agent.server.screening import screen
from llmbench.proto import pb

FIXED, PER_TOKEN = 0.004, 2e-5  # a device where a step costs 4 ms plus 20 us a token


def fed(sizes, max_tokens: int = 8192) -> StepBudget:
    budget = StepBudget(max_tokens)
    for n in sizes:
        budget.observe(n, FIXED + PER_TOKEN * n)
    return budget


def test_the_fit_reads_fixed_cost_and_cost_per_token_from_steps_of_mixed_sizes():
    budget = fed([40, 1000, 60, 2000, 50, 1500, 45, 800] * 3)
    fixed, per_token = budget.line()
    assert fixed == pytest.approx(FIXED, rel=1e-6) and per_token == pytest.approx(PER_TOKEN, rel=1e-6)
    # 30 ms limit: the step may take HEADROOM x 30 ms, so (21 - 4) ms / 20 us = 850 tokens.
    assert budget.tokens(decode_rows=40, tpot_limit_s=0.030) == math.floor((HEADROOM * 0.030 - FIXED) / PER_TOKEN)
    assert budget.tokens(decode_rows=40, tpot_limit_s=0.0) == 8192  # no limit (Offline): the whole budget
    assert budget.tokens(decode_rows=40, tpot_limit_s=10.0) == 8192  # never more than max_step_tokens


def test_the_headroom_is_the_share_of_the_limit_steps_aim_at():
    budget = StepBudget(8192, headroom=0.5)
    for n in [40, 1000, 60, 2000] * 3:
        budget.observe(n, FIXED + PER_TOKEN * n)
    assert budget.tokens(decode_rows=40, tpot_limit_s=0.030) == math.floor((0.5 * 0.030 - FIXED) / PER_TOKEN)


def test_a_limit_no_step_can_meet_still_leaves_prefill_its_minimum():
    budget = fed([40, 1000, 60, 2000] * 3)
    assert budget.tokens(decode_rows=300, tpot_limit_s=0.001) == 300 + MIN_PREFILL


def test_no_fit_before_enough_steps_nor_from_steps_all_of_one_size():
    assert fed([40, 1000] * (MIN_STEPS // 2 - 1)).tokens(10, 0.03) == FIRST_TOKENS  # too few steps yet
    same = fed([500] * 50)
    assert same.line() is None and same.tokens(10, 0.0) == FIRST_TOKENS  # nothing to read a slope from
    assert StepBudget(64).tokens(0, 0.0) == 64  # never past max_step_tokens


def test_a_slow_device_gets_steps_it_finishes_within_seconds():
    """A real model on a few CPU cores: 50 ms a token. Steps are cut to MAX_STEP_S, not the 8192 tokens
    (minutes) that would look like a hung engine."""
    budget = StepBudget(8192)
    for n in [40, 512, 60, 300] * 3:
        budget.observe(n, 0.2 + 0.05 * n)
    n = budget.tokens(decode_rows=4, tpot_limit_s=0.0)
    assert MAX_STEP_S - 0.05 <= 0.2 + 0.05 * n <= MAX_STEP_S + 1e-9, n  # the most tokens that fit in 5 s (~96)


def test_steps_slower_than_predicted_shrink_the_budget():
    budget = fed([40, 1000, 60, 2000] * 3)
    sized = budget.tokens(10, 0.03)
    for _ in range(100):  # the device slows down (longer contexts, a neighbour): steps of that size take 50 ms
        budget.observe(sized, 0.05)
    assert budget.tokens(10, 0.03) < sized


def seq(i: int, prompt_len: int, limit_s: float) -> Sequence:
    return Sequence(Request(id=i, prompt=[1] * prompt_len, max_new_tokens=8, tpot_limit_s=limit_s), None, (), 8)


def test_the_scheduler_sizes_steps_by_the_tightest_limit_of_the_decoding_queries():
    blocks = BlockManager(512, 16)
    s = Scheduler(blocks, max_batch=64, max_step_tokens=4096)
    s.budget = fed([40, 1000, 60, 2000] * 3, max_tokens=4096)
    decoding = [seq(i, 8, 0.100 if i else 0.030) for i in range(4)]  # one Interactive query among Server ones
    for d in decoding:
        s.add(d)
    s.update(s.schedule(), [5] * 4)  # their prompts in one step
    for i in range(4, 8):
        s.add(seq(i, 3000, 0.030))  # long prompts waiting
    batch = s.schedule()
    assert len(batch.decode) == 4
    assert batch.num_tokens == s.budget.tokens(4, 0.030) == math.floor((HEADROOM * 0.030 - FIXED) / PER_TOKEN)
    s.update(batch, [5] * len(batch.sampling()))
    for d in decoding:
        s.release(d)
    alone = s.schedule()  # nobody decodes: no TPOT at stake, prefill takes the whole step
    assert not alone.decode and alone.num_tokens == 4096


def test_the_limit_crosses_the_wire_in_milliseconds_and_bad_values_are_refused():
    _, accepted = screen([pb.Query(id=1, prompt_tokens=[1, 2], max_new_tokens=4, tpot_limit_ms=30)], set(), 64)
    assert accepted[0].tpot_limit_s == pytest.approx(0.030)
    engine = PagedEngine(EngineConfig(model="tiny", device="cpu", max_batch=8, max_step_tokens=64, num_kv_blocks=64))
    engine.start()
    try:
        bad = generate(engine, [Request(id=0, prompt=[1, 2], max_new_tokens=4, tpot_limit_s=-0.01),
                                Request(id=1, prompt=[1, 2], max_new_tokens=4, tpot_limit_s=float("nan"))])
        assert all(g.error[0] == ErrorCode.INVALID_QUERY and "tpot_limit_ms" in g.error[1] for g in bad.values())
    finally:
        engine.stop()


def test_outputs_do_not_depend_on_the_limit():
    """A tight limit only changes how prompts are chunked across steps; greedy outputs stay the same."""
    cfg = EngineConfig(model="tiny", device="cpu", max_batch=4, max_step_tokens=256, num_kv_blocks=256)
    prompts = [[1] + [5 + i] * (30 + 40 * i) for i in range(12)]
    outputs, steps = [], []
    for limit in (0.0, 1e-4):
        engine = PagedEngine(cfg)
        engine.start()
        try:
            got = generate(engine, [Request(id=i, prompt=p, max_new_tokens=12, ignore_eos=True, tpot_limit_s=limit)
                                    for i, p in enumerate(prompts)])
            outputs.append({i: g.tokens for i, g in got.items()})
            steps.append(engine.stats().steps_total)
        finally:
            engine.stop()
    assert outputs[0] == outputs[1]
    # Once fitted, an unmeetable limit gives prefill only decode rows + MIN_PREFILL tokens a step: more steps.
    assert steps[1] > steps[0] + 10, steps


def test_a_timed_warm_up_caps_the_first_steps_of_a_slow_device():
    slow = StepBudget(8192)
    slow.seed(513, 20.0)  # a prefill of 512 tokens and a decode step took 20 s: ~40 ms a token
    assert slow.tokens(decode_rows=0, tpot_limit_s=0.0) == int(MAX_STEP_S * 513 / 20.0)  # 128: 5 s of it
    assert slow.tokens(decode_rows=100, tpot_limit_s=0.0) == 100 + MIN_PREFILL  # decode rows still all ride
    fast = StepBudget(8192)
    fast.seed(513, 0.01)
    assert fast.tokens(0, 0.0) == FIRST_TOKENS  # a fast device keeps the first budget until the fit is read


def test_the_paged_engine_knows_what_a_step_costs_from_its_warm_up():
    engine = PagedEngine(EngineConfig(model="tiny", device="cpu", max_batch=8, max_step_tokens=64, num_kv_blocks=64))
    engine.start()
    try:
        s = engine.stats()
        assert s.slowest_step_s > 0 and s.step_running_s == 0 and s.steps_total == 0
        assert engine.scheduler.blocks.num_free == 64  # the warm-up's blocks are back
    finally:
        engine.stop()
