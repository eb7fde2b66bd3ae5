"""Dispatch logic against fake links: capacity estimate, no over-commit, re-dispatch on agent loss."""
from __future__ import annotations


import pytest

from llmbench.coordinator.mesh.capacity import Capacity
from llmbench.coordinator.mesh.dispatch import DispatchConfig
from llmbench.proto import pb
from pool_harness import jobs, make_pool, status, turn

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def test_capacity_counts_unseen_sends_and_finishes():
    cap = Capacity(status(10_000, received=50, finished=40, max_batch=8, running=7))
    cap.on_sent(1000)
    cap.on_sent(2000)
    assert cap.free_tokens() == 7000 and cap.waiting() == 1  # one takes the free batch slot
    cap.on_status(status(9000, received=51, finished=40, max_batch=8, running=8))  # it has seen one
    assert cap.free_tokens() == 7000 and cap.waiting() == 1
    cap.on_finished(1000)  # finished after that report: its KV and slot are back before it says so
    assert cap.free_tokens() == 8000 and cap.waiting() == 0
    cap.on_status(status(8000, received=52, finished=41, max_batch=8, running=8))  # now it counted both
    assert cap.free_tokens() == 8000 and cap.waiting() == 0


async def test_routes_to_most_free_and_batches_per_turn():
    pool, links, rec = make_pool()
    pool.add_agent("a:1")
    pool.add_agent("b:1")
    pool.on_ready(links["a:1"], status(5_000))
    pool.on_ready(links["b:1"], status(20_000))
    pool.submit(jobs(4))  # 128 tokens each: b has the most room for every one of them
    await turn()
    assert links["a:1"].sent == [] and len(links["b:1"].sent) == 1 and len(links["b:1"].queries) == 4
    assert pool.slots["b:1"].capacity.free_tokens() == 20_000 - 4 * 128


async def test_never_overcommits_and_queues_centrally():
    pool, links, rec = make_pool(DispatchConfig(overcommit=0.0, max_waiting=100, reconnect_s=3600))
    pool.add_agent("a:1")
    pool.on_ready(links["a:1"], status(1000))
    pool.submit(jobs(20))  # 128 tokens each: 7 fit in 1000
    await turn()
    link = links["a:1"]
    assert len(link.queries) == 7 and len(pool.queue) == 13
    pool.on_status(link, status(1000 - 7 * 128, received=7))  # nothing new: still no room
    await turn()
    assert len(link.queries) == 7
    first = link.queries[0]
    link.step({first.id: [5]}, finished=(first.id,))  # one finished: exactly one more fits
    await turn()
    assert len(link.queries) == 8 and len(pool.queue) == 12
    assert rec.done[0].tokens == [5]


async def test_bounded_overcommit_keeps_a_waiting_queue():
    pool, links, _ = make_pool(DispatchConfig(overcommit=0.1, max_waiting=3, reconnect_s=3600))
    pool.add_agent("a:1")
    pool.on_ready(links["a:1"], status(0, blocks=100))  # full cache of 1600 tokens; slack 160
    pool.submit(jobs(10, prompt_len=50, max_new=10))  # 60 tokens each
    await turn()
    # The first always goes (nothing in flight); then the overcommit allows 160 tokens in all.
    assert len(links["a:1"].queries) == 2


async def test_lost_agent_queries_continue_elsewhere_once():
    pool, links, rec = make_pool()
    pool.add_agent("a:1")
    pool.on_ready(links["a:1"], status(10_000))
    pool.submit(jobs(3))
    await turn()
    a = links["a:1"]
    q0, q1, q2 = a.queries
    a.step({q0.id: [7], q1.id: [8]})  # first tokens of two queries
    a.step({q0.id: [9]}, finished=(q0.id,))
    assert rec.firsts == [0, 1] and list(rec.done) == [0]
    pool.add_agent("b:1")
    pool.on_ready(links["b:1"], status(10_000))
    pool.on_lost(a, "killed")
    await turn()
    assert a.closed and "a:1" in pool.slots and pool.slots["a:1"].capacity is None
    b = links["b:1"]
    moved = {q.id: q for q in b.queries}
    assert len(moved) == 2
    resumed = [q for q in moved.values() if len(q.prompt_tokens) == 101]
    assert len(resumed) == 1 and resumed[0].prompt_tokens[-1] == 8 and resumed[0].max_new_tokens == 29 - 1
    a.step({q1.id: [99]}, finished=(q1.id,))  # a late message from the lost link is ignored
    assert 1 not in rec.done
    b.step({q.id: [1, 2] for q in moved.values()}, finished=tuple(moved))
    assert sorted(rec.done) == [0, 1, 2] and rec.completions == 3
    assert rec.firsts == [0, 1, 2]  # sample 2 got its first token from b, no repeat for sample 1
    assert rec.done[1].tokens == [8, 1, 2] and rec.done[2].tokens == [1, 2]
    assert pool.metrics.snapshot().redispatched == 2


async def test_internal_error_retries_and_invalid_fails():
    pool, links, rec = make_pool()
    pool.add_agent("a:1")
    pool.on_ready(links["a:1"], status(10_000))
    pool.submit(jobs(2))
    await turn()
    a = links["a:1"]
    q0, q1 = a.queries
    a.step({}, errors=(pb.QueryError(id=q0.id, code=pb.ERROR_CODE_INTERNAL, message="oops"),
                       pb.QueryError(id=q1.id, code=pb.ERROR_CODE_TOO_LONG, message="too long")))
    await turn()
    assert list(rec.done) == [1] and "TOO_LONG" in rec.done[1].error
    assert len(a.queries) == 3 and a.queries[2].prompt_tokens == q0.prompt_tokens
    assert pool.metrics.snapshot().failed == 1


async def test_remove_agent_drains_then_closes():
    pool, links, rec = make_pool()
    pool.add_agent("a:1")
    pool.add_agent("b:1")
    pool.on_ready(links["a:1"], status(10_000))
    pool.submit(jobs(1))
    await turn()
    pool.on_ready(links["b:1"], status(10_000))
    a = links["a:1"]
    pool.remove_agent("a:1")
    assert not a.closed  # still has a query in flight
    pool.submit(jobs(1, start=1))
    await turn()
    assert len(a.queries) == 1 and len(links["b:1"].queries) == 1  # the draining agent got nothing new
    a.step({a.queries[0].id: [3]}, finished=(a.queries[0].id,))
    assert a.closed and "a:1" not in pool.slots and 0 in rec.done


async def test_fail_all_answers_everything_once():
    pool, links, rec = make_pool()
    pool.add_agent("a:1")
    pool.on_ready(links["a:1"], status(200))
    pool.submit(jobs(3))
    await turn()
    pool.fail_all("no agents")
    pool.submit(jobs(1, start=3))
    assert sorted(rec.done) == [0, 1, 2, 3] and all(j.error for j in rec.done.values())


async def test_fail_all_leaves_nothing_counted_as_queued():
    pool, links, rec = make_pool()
    pool.add_agent("a:1")  # never ready: everything waits in the queue
    pool.submit(jobs(4))
    await turn()
    assert pool.metrics.queued == 4
    pool.fail_all("no agent ready for 60 s")
    assert pool.metrics.queued == 0 and sorted(rec.done) == [0, 1, 2, 3]


async def test_wait_ready_names_the_missing_agent(caplog):
    pool, links, _ = make_pool()
    pool.add_agent("b:2")
    links["b:2"].last_error = "UNAVAILABLE: connection refused"
    with pytest.raises(ConnectionError, match=r"agent b:2 did not answer .*connection refused"):
        await pool.wait_ready(0.1, 10)
    pool.add_agent("a:1")  # with another agent up, the missing one is left behind (and used once it comes up)
    pool.on_ready(links["a:1"], status(100))
    await pool.wait_ready(0.1, 10)
    assert "agent b:2 did not answer" in caplog.text and "starting without it" in caplog.text
    assert "b:2" in pool.slots and links["b:2"].closed is False


async def test_waiting_queue_at_an_agent_is_bounded():
    pool, links, _ = make_pool(DispatchConfig(max_waiting=2, reconnect_s=3600))
    pool.add_agent("a:1")
    pool.on_ready(links["a:1"], status(1_000_000, max_batch=4, running=4))  # plenty of KV, batch full
    pool.submit(jobs(10))
    await turn()
    a = links["a:1"]
    assert len(a.queries) == 2 and len(pool.queue) == 8
    pool.on_status(a, status(1_000_000, received=2, max_batch=4, running=2, waiting=0))  # two slots free
    await turn()
    assert len(a.queries) == 6  # two for the free slots plus two waiting
    a.step({a.queries[0].id: [1]}, finished=(a.queries[0].id,))  # a finish frees one more slot
    await turn()
    assert len(a.queries) == 7


async def test_idle_equal_agents_take_turns():
    pool, links, _ = make_pool()
    for name in ("a:1", "b:1"):
        pool.add_agent(name)
        pool.on_ready(links[name], status(10_000))
    for i in range(6):  # one query at a time, each finished before the next arrives
        pool.submit(jobs(1, start=i))
        await turn()
        (busy,) = [s for s in pool.slots.values() if s.inflight]
        link = links[busy.address]
        q = link.queries[-1]
        link.step({q.id: [1]}, finished=(q.id,))
    assert len(links["a:1"].queries) == 3 and len(links["b:1"].queries) == 3
