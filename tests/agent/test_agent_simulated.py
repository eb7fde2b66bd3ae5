"""SimulatedEngine on its own: the Engine contract without a model."""
import threading
import time

import pytest

from llmbench.agent.engine.simulated import SimulatedEngine
from llmbench.agent.engine.types import EngineConfig, ErrorCode, FinishReason, Request, StepOutput, token_runs


class Collector:
    """A sink that records every StepOutput and signals when the expected queries ended."""

    def __init__(self):
        self.outputs: list[StepOutput] = []
        self.ended: dict[int, object] = {}
        self.changed = threading.Condition()

    def __call__(self, out: StepOutput) -> None:
        with self.changed:
            self.outputs.append(out)
            for qid, reason in out.finished:
                assert qid not in self.ended, f"query {qid} ended twice"
                self.ended[qid] = reason
            for qid, code, _ in out.errors:
                assert qid not in self.ended, f"query {qid} ended twice"
                self.ended[qid] = code
            self.changed.notify_all()

    def wait(self, n: int, timeout: float = 10.0) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.ended) >= n, timeout), f"only {len(self.ended)} of {n} ended"

    def tokens(self, qid: int) -> list[int]:
        got = []
        for out in self.outputs:
            for i, tokens in token_runs(out):
                if i == qid:
                    got += tokens
        return got


@pytest.fixture
def engine_factory():
    engines = []

    def make(**kw):
        e = SimulatedEngine(EngineConfig(engine="simulated", **kw))
        e.start()
        engines.append(e)
        return e
    yield make
    for e in engines:
        e.stop()


def test_every_query_gets_max_new_tokens_and_one_finish(engine_factory):
    engine = engine_factory(tokens_per_s=50_000)
    sink = Collector()
    engine.submit([Request(i, [1, 2, i + 3], max_new_tokens=3 + i % 7, ignore_eos=True) for i in range(40)], sink)
    sink.wait(40)
    for i in range(40):
        assert sink.ended[i] == FinishReason.LENGTH
        assert len(sink.tokens(i)) == 3 + i % 7
    assert max(len(o.ids) for o in sink.outputs) > 1, "queries were not batched into shared steps"
    assert all(0 <= t < 128000 for o in sink.outputs for t in o.tokens)
    steps = [o.step for o in sink.outputs]
    assert steps == sorted(steps)
    s = engine.stats()
    assert (s.running, s.waiting, s.queries_received_total, s.queries_finished_total) == (0, 0, 40, 40)
    assert s.output_tokens_total == sum(3 + i % 7 for i in range(40))
    assert s.prompt_tokens_total == 40 * 3
    assert s.kv_blocks_free == s.kv_blocks_total


def test_tokens_are_deterministic_per_prompt(engine_factory):
    engine = engine_factory(tokens_per_s=50_000)
    a, b = Collector(), Collector()
    engine.submit([Request(1, [7, 8, 9], 6), Request(2, [7, 8, 10], 6)], a)
    engine.submit([Request(1, [7, 8, 9], 6)], b)
    a.wait(2)
    b.wait(1)
    assert a.tokens(1) == b.tokens(1)
    assert a.tokens(1) != a.tokens(2)


def test_validation_errors(engine_factory):
    engine = engine_factory(tokens_per_s=50_000, max_context=100, num_kv_blocks=4, block_size=16)
    sink = Collector()
    engine.submit([Request(1, [], 5), Request(2, [1, 128256], 5), Request(3, [1], 0), Request(4, [1] * 90, 20),
                   Request(5, [1] * 60, 20), Request(6, [1], 3, min_new_tokens=-1), Request(7, [1, 2], 3)], sink)
    sink.wait(7)
    assert sink.ended == {1: ErrorCode.INVALID_QUERY, 2: ErrorCode.INVALID_QUERY, 3: ErrorCode.INVALID_QUERY,
                          4: ErrorCode.TOO_LONG, 5: ErrorCode.TOO_LONG, 6: ErrorCode.INVALID_QUERY,
                          7: FinishReason.LENGTH}
    messages = {qid: m for o in sink.outputs for qid, _, m in o.errors}
    assert messages[1] == "prompt is empty"
    assert "128256" in messages[2] and "position 1" in messages[2]
    assert "context of 100" in messages[4]
    assert "KV blocks" in messages[5]


def test_duplicate_id_on_one_sink_only(engine_factory):
    engine = engine_factory(tokens_per_s=200)
    a, b = Collector(), Collector()
    engine.submit([Request(1, [1], 20)], a)
    engine.submit([Request(1, [1], 2)], a)
    engine.submit([Request(1, [1], 2)], b)  # same id on another sink is a different query
    b.wait(1)
    assert b.ended[1] == FinishReason.LENGTH
    a.wait(1)
    assert a.ended[1] == ErrorCode.DUPLICATE_ID
    engine.cancel([1], a)
    a.wait(1)


def test_kv_admission_and_max_batch(engine_factory):
    # each query needs ceil((10 + 20) / 16) = 2 blocks: the 4-block cache holds two at a time
    engine = engine_factory(tokens_per_s=20_000, num_kv_blocks=4, block_size=16, max_batch=8)
    sink = Collector()
    engine.submit([Request(i, [1] * 10, 20) for i in range(6)], sink)
    sink.wait(6)
    assert max(len(o.ids) for o in sink.outputs) == 2
    engine2 = engine_factory(tokens_per_s=20_000, max_batch=3)
    sink2 = Collector()
    engine2.submit([Request(i, [1] * 10, 20) for i in range(7)], sink2)
    sink2.wait(7)
    assert max(len(o.ids) for o in sink2.outputs) == 3


def wait_until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_stats_show_waiting_and_reservations(engine_factory):
    # 20 tokens/s: the first two queries run for 2 s, so a test thread slowed by a busy machine still
    # reads the stats before one of them ends and the third is admitted.
    engine = engine_factory(tokens_per_s=20, num_kv_blocks=4, block_size=16)
    sink = Collector()
    engine.submit([Request(i, [1] * 10, 20) for i in range(3)], sink)
    wait_until(lambda: engine.stats().running >= 2)
    s = engine.stats()
    assert (s.running, s.waiting, s.kv_blocks_free) == (2, 1, 0)
    assert s.kv_tokens_available == -32  # the waiting query's reservation
    engine.drop_sink(sink)


def test_stats_count_every_query_once_even_before_the_engine_thread_takes_it_in(engine_factory):
    # The coordinator sizes what it sends from these reports: a query counted as received but not yet
    # as waiting made it send more than the agent's bound (seen under load in the backpressure test).
    engine = engine_factory(tokens_per_s=200, max_batch=2, num_kv_blocks=64, block_size=16)
    sink = Collector()
    problems = []
    for i in range(50):
        engine.submit([Request(10 * i + j, [1] * 10, 4) for j in range(10)], sink)
        s = engine.stats()  # at once: the engine thread has usually not woken yet
        if s.running + s.waiting + s.queries_finished_total != s.queries_received_total:
            problems.append(s)
        if s.kv_tokens_available > (s.kv_blocks_free - s.waiting) * 16:
            problems.append(("waiting queries' KV not reserved", s))
        engine.cancel([10 * i + j for j in range(10)], sink)
    assert not problems, problems[:2]
    wait_until(lambda: engine.stats().queries_finished_total == 500)


def test_cancel_and_drop_sink(engine_factory):
    engine = engine_factory(tokens_per_s=1000)
    a, b = Collector(), Collector()
    engine.submit([Request(1, [1], 100_000), Request(2, [1], 100_000)], a)
    engine.submit([Request(1, [1], 100_000)], b)
    wait_until(lambda: len(b.outputs) > 0)  # every query is running
    engine.cancel([2, 42], a)  # 42 is unknown: ignored
    a.wait(1)
    assert a.ended == {2: FinishReason.CANCELLED}
    engine.drop_sink(b)
    wait_until(lambda: engine.stats().running == 1)  # the engine has handled the drop
    after_drop = len(b.outputs)
    time.sleep(0.1)
    assert len(b.outputs) == after_drop and b.ended == {}
    assert engine.stats().running == 1  # only a's query 1
    engine.cancel([1], a)
    a.wait(2)
    assert engine.stats().running == 0


def test_pacing_follows_tokens_per_s(engine_factory):
    engine = engine_factory(tokens_per_s=2000)
    sink = Collector()
    start = time.monotonic()
    engine.submit([Request(i, [1, i], 100, ignore_eos=True) for i in range(10)], sink)  # 1000 tokens
    sink.wait(10)
    elapsed = time.monotonic() - start
    assert 0.3 < elapsed < 2.0, f"1000 tokens at 2000 tokens/s took {elapsed:.2f} s"
