"""Block manager and scheduler: random arrivals, cancellations and finishes never leak or double-free."""
from __future__ import annotations

import random
import threading
import time

import pytest

from llmbench.agent.engine.block_manager import BlockManager
from llmbench.agent.engine.paged import PagedEngine
from llmbench.agent.engine.scheduler import Scheduler, Sequence
from llmbench.agent.engine.types import EngineConfig, Request, StepOutput

EOS = 2


def test_block_manager_allocate_free():
    bm = BlockManager(8, 4)
    assert bm.blocks_for(1) == 1 and bm.blocks_for(4) == 1 and bm.blocks_for(5) == 2
    a = bm.allocate(5)
    assert len(set(a)) == 5 and bm.num_free == 3 and not bm.can_allocate(4)
    with pytest.raises(RuntimeError):
        bm.allocate(4)
    bm.free(a[:2])
    with pytest.raises(RuntimeError, match="twice"):
        bm.free(a[:1])
    with pytest.raises(RuntimeError, match="twice"):
        bm.free([a[2], a[2]])
    assert bm.num_free == 5  # a failed free changes nothing
    bm.free(a[2:])
    assert bm.num_free == 8 and sorted(bm.allocate(8)) == list(range(8))


def check_invariants(s: Scheduler, bm: BlockManager) -> None:
    owned = [b for seq in s.running for b in seq.block_table]
    assert len(owned) == len(set(owned)), "a block is owned twice"
    assert len(owned) + bm.num_free == bm.num_blocks, "blocks leaked"
    assert all(len(seq.block_table) == seq.num_blocks for seq in s.running)
    assert s.waiting_blocks == sum(seq.num_blocks for seq in s.waiting)
    assert len(s.running) <= s.max_running


def test_scheduler_random_traffic():
    rng = random.Random(0)
    bm = BlockManager(64, 4)
    s = Scheduler(bm, max_batch=12, max_step_tokens=40)
    live: list[Sequence] = []
    next_id = finished = cancelled = 0
    for _ in range(3000):
        for _ in range(rng.choice([0, 0, 0, 1, 2])):
            prompt_len, max_new = rng.randint(1, 60), rng.randint(1, 40)
            req = Request(id=next_id, prompt=[7] * prompt_len, max_new_tokens=max_new,
                          min_new_tokens=rng.choice([0, 1, 3]), stop_ids=(5,) if rng.random() < 0.3 else ())
            seq = Sequence(req, None, (EOS,), bm.blocks_for(prompt_len + max_new - 1))
            s.add(seq)
            live.append(seq)
            next_id += 1
        if live and rng.random() < 0.05:
            victim = live.pop(rng.randrange(len(live)))
            s.release(victim)
            s.release(victim)  # a second release is a no-op, never a double free
            cancelled += 1
        batch = s.schedule()
        check_invariants(s, bm)
        assert batch.num_tokens <= 40
        assert len(batch.decode) == sum(1 for q in s.running if not q.prefilling)
        sampling = batch.sampling()
        tokens = [rng.choice([EOS, 5, 9, 9, 9, 9, 9, 9, 9, 9, 9]) for _ in sampling]
        for seq, token, reason in s.update(batch, tokens):
            assert seq.num_cached == len(seq.tokens) - 1
            assert seq.num_output <= seq.max_new_tokens
            if reason is not None:
                live.remove(seq)
                finished += 1
        check_invariants(s, bm)
    for seq in list(live):
        s.release(seq)
    assert finished > 500 and cancelled > 50
    assert bm.num_free == bm.num_blocks and not s.has_work() and s.waiting_blocks == 0


def test_scheduler_random_traffic_with_each_step_read_one_step_late():
    """As the overlapped engine drives it: step N+1 is scheduled and advanced before step N settles.
    Every token of a sequence is settled in order, none after its end, and nothing leaks."""
    rng = random.Random(2)
    bm = BlockManager(64, 4)
    s = Scheduler(bm, max_batch=12, max_step_tokens=40)
    outputs: dict[int, list[int]] = {}
    ended: dict[int, object] = {}
    live: list[Sequence] = []
    in_flight = None
    for step in range(100_000):
        if step >= 2000 and not s.has_work() and in_flight is None:
            break  # drained
        if step < 2000:
            for _ in range(rng.choice([0, 0, 0, 1, 2])):
                prompt_len, max_new = rng.randint(1, 60), rng.randint(1, 40)
                req = Request(id=len(outputs), prompt=[7] * prompt_len, max_new_tokens=max_new)
                seq = Sequence(req, None, (EOS,), bm.blocks_for(prompt_len + max_new - 1))
                outputs[req.id] = []
                s.add(seq)
                live.append(seq)
            if live and rng.random() < 0.05:
                victim = live.pop(rng.randrange(len(live)))
                s.release(victim)
                ended[victim.id] = "cancelled"
        batch = s.schedule()
        assert all(q.num_output < q.max_new_tokens for q in batch.decode)
        s.advance(batch)
        check_invariants(s, bm)
        if in_flight is not None:
            sampled = in_flight.sampling()
            for seq, token, reason in s.settle(in_flight, [rng.choice([EOS] + [9] * 15) for _ in sampled]):
                assert seq.id not in ended, "a token settled after its sequence ended"
                outputs[seq.id].append(token)
                assert seq.tokens[seq.prompt_len:len(seq.tokens) - seq.unsettled] == outputs[seq.id]
                if reason is not None:
                    ended[seq.id] = reason
                    live.remove(seq)
                    assert seq.unsettled == 0 and len(outputs[seq.id]) <= seq.max_new_tokens
            check_invariants(s, bm)
        in_flight = batch if batch.num_tokens else None
    assert not live and not s.has_work() and bm.num_free == bm.num_blocks
    assert len(ended) == len(outputs) > 300
    assert sum(r == "cancelled" for r in ended.values()) > 30


@pytest.mark.parametrize("overlap", [False, True], ids=["waited", "overlapped"])
def test_engine_stats_match_allocator_under_random_load(overlap):
    engine = PagedEngine(EngineConfig(model="tiny", device="cpu", num_kv_blocks=40, block_size=4,
                                      max_batch=8, max_step_tokens=32))
    engine.overlap = overlap  # cancels land while a step is launched and not yet read
    engine.start()
    rng = random.Random(1)
    problems: list[str] = []
    outcomes: dict[int, int] = {}
    lock = threading.Lock()
    done = threading.Event()

    def sink(out: StepOutput) -> None:
        with lock:
            for qid, _ in out.finished:
                outcomes[qid] = outcomes.get(qid, 0) + 1
            for qid, _, _ in out.errors:
                outcomes[qid] = outcomes.get(qid, 0) + 1

    def watch() -> None:  # what a status stream sees, from another thread, while the engine steps
        while not done.is_set():
            st = engine.stats()
            if st.running + st.waiting + st.queries_finished_total != st.queries_received_total:
                problems.append(f"a query counted twice or not at all: {st}")
            if not 0 <= st.kv_blocks_free <= st.kv_blocks_total or st.kv_tokens_available > st.kv_blocks_free * 4:
                problems.append(f"KV figures out of range: {st}")
            time.sleep(0.001)  # poll often, but leave the engine thread the GIL
    watcher = threading.Thread(target=watch)
    watcher.start()

    try:
        ids = list(range(300))
        for start in range(0, 300, 20):
            engine.submit([Request(id=i, prompt=[rng.randrange(3, 1000) for _ in range(rng.randint(1, 30))],
                                   max_new_tokens=rng.randint(1, 8)) for i in ids[start:start + 20]], sink)
            engine.cancel(rng.sample(ids[:start + 20], 5), sink)
        deadline = time.monotonic() + 60
        while len(outcomes) < 300 and time.monotonic() < deadline:
            time.sleep(0.02)
        st = engine.stats()
    finally:
        done.set()
        watcher.join()
        engine.stop()
    assert not problems, problems[:3]
    assert sorted(outcomes) == ids and set(outcomes.values()) == {1}, "each query answered exactly once"
    assert st.kv_blocks_free == st.kv_blocks_total == 40 and st.kv_tokens_available == 160
    assert st.running == st.waiting == 0
    assert st.queries_received_total == st.queries_finished_total == 300
