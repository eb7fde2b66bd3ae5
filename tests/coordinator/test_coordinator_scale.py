"""The coordinator at scale: routing cost with many agents, the wire encoding of queries, per-agent
utilisation, and agents of different speed and memory all kept busy."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from llmbench.coordinator.commands import run_local
from llmbench.coordinator.mesh.agent_slot import AgentSlot
from llmbench.coordinator.mesh.dispatch import DispatchConfig
from llmbench.coordinator.mesh.job import SUBMIT_BYTES, Job, encode_submits, wire_body
from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.coordinator.observe.progress_text import utilisation_lines
from llmbench.proto import pb
from pool_harness import jobs, make_pool, status, turn

CLI = [sys.executable, "-c", "import sys; from llmbench.cli import main; sys.exit(main())"]
UTILISATION = re.compile(r"^\s+(\S+)\s+([\d.]+) % of queries\s+([\d.]+) % of tokens\s+busy\s+([\d.]+) %"
                         r"\s+KV in use\s+(?:(\d+) %|\?)$", re.MULTILINE)


@pytest.fixture
def anyio_backend():
    return "asyncio"


def test_submit_encoding_is_protobufs():
    rng = np.random.default_rng(0)
    queries = [pb.Query(id=i, prompt_tokens=rng.integers(0, 128_000, n).tolist(), max_new_tokens=128, min_new_tokens=1,
                        stop_token_ids=[128009] if i % 2 else [])
               for i, n in enumerate([1, 40, 127, 128, 5000, 20_000])]  # lengths across varint byte boundaries
    assert encode_submits(queries) == [pb.ServeRequest(submit=pb.QueryBatch(queries=queries)).SerializeToString()]
    assert encode_submits(queries[:1]) == [pb.ServeRequest(submit=pb.QueryBatch(queries=queries[:1])).SerializeToString()]
    assert [pb.ServeRequest.FromString(r).WhichOneof("kind") for r in encode_submits([])] == ["submit"]


def test_submits_are_split_below_what_the_agent_takes_in():
    """A batch past the agent's receive limit goes as several submits, in order, each under the limit."""
    query = pb.Query(prompt_tokens=[127_000] * 131_072, max_new_tokens=128)  # a whole 128k context: 3 bytes a token
    batch = [pb.Query(id=i, prompt_tokens=query.prompt_tokens, max_new_tokens=128) for i in range(25)]
    requests = encode_submits(batch)
    assert len(requests) == 3 and all(len(r) <= SUBMIT_BYTES + 64 for r in requests)
    parsed = [q for r in requests for q in pb.ServeRequest.FromString(r).submit.queries]
    assert parsed == batch
    alone = encode_submits(batch[:2], limit=1000)  # one query past the limit still goes, alone
    assert [len(pb.ServeRequest.FromString(r).submit.queries) for r in alone] == [1, 1]


def test_query_made_ahead_is_the_query_made_at_dispatch():
    prompt = np.arange(1, 900, dtype=np.int32) * 131
    ahead = Job(1, 7, prompt, 128, 1, wire_body=wire_body(prompt, 128, 1))
    built = Job(1, 7, prompt, 128, 1)
    assert ahead.wire_query(2**40) == built.wire_query(2**40) == pb.Query(
        id=2**40, prompt_tokens=prompt.tolist(), max_new_tokens=128, min_new_tokens=1)
    ahead.tokens = built.tokens = [5, 6]  # resumed elsewhere: prompt plus what it had, the rest to go
    assert ahead.wire_query(3) == built.wire_query(3)
    assert list(ahead.wire_query(3).prompt_tokens[-2:]) == [5, 6] and ahead.wire_query(3).max_new_tokens == 126


@pytest.mark.anyio
async def test_a_blocked_queue_asks_only_the_agents_that_changed(monkeypatch):
    asked: list[str] = []
    accepts = AgentSlot.accepts

    def counting(self, job, cfg):
        asked.append(self.address)
        return accepts(self, job, cfg)

    monkeypatch.setattr(AgentSlot, "accepts", counting)
    pool, links, rec = make_pool(DispatchConfig(overcommit=0.0, max_waiting=100, reconnect_s=3600))
    names = [f"a{i}:1" for i in range(60)]
    for i, name in enumerate(names):
        pool.add_agent(name)
        pool.on_ready(links[name], status(2 * 128 + i))  # room for two queries of 128 tokens each
    pool.submit(jobs(200))
    await turn()
    assert [len(links[n].queries) for n in names] == [2] * 60 and len(pool.queue) == 80
    asked.clear()
    for name in names:  # status reports that change nothing: nobody has room, the queue stays put
        pool.on_status(links[name], status(50, received=2))
    await turn()
    assert len(pool.queue) == 80
    asked.clear()
    busy = links["a17:1"]
    q = busy.queries[0]
    busy.step({q.id: [1]}, finished=(q.id,))  # one agent gets room for one query
    await turn()
    assert len(busy.queries) == 3 and len(pool.queue) == 79 and rec.done[q.id - 1].tokens == [1]
    assert set(asked) == {"a17:1"} and len(asked) <= 3  # not a look at all 60 agents
    a, b = links["a3:1"], links["a40:1"]  # two get room in the same turn: the one with more gets the head
    pool.on_status(a, status(300, received=2))  # room for two: 300, then 172 tokens free
    pool.on_status(b, status(200, received=2))  # room for one
    await turn()
    assert [q.id for q in a.queries[2:]] == [122, 124] and [q.id for q in b.queries[2:]] == [123]
    assert len(pool.queue) == 76 and pool.queue[0].index == 124


def test_busy_time_and_shares():
    metrics = RunMetrics()
    a, b = metrics.agent("a:1"), metrics.agent("b:1")
    metrics.record_inflight(a, 3)
    metrics.mark_started()  # what was in flight before counts from here
    metrics.record_tokens(a, 300)
    metrics.record_tokens(b, 100)
    metrics.record_status(a, pb.AgentStatus(kv_blocks_total=100, kv_blocks_free=20))
    metrics.record_status(a, pb.AgentStatus(kv_blocks_total=100, kv_blocks_free=40))
    for counters in (a, a, a, b):
        metrics.record_completed(counters, 0.1, 0.01)
    time.sleep(0.2)
    before = time.monotonic() - metrics.started_at
    metrics.record_inflight(a, 0)
    metrics.record_inflight(b, 1)
    after = time.monotonic() - metrics.started_at
    time.sleep(0.2)
    s = metrics.snapshot()
    busy = {x.address: x.busy_s for x in s.agents}
    # Bracketed by the test's own clock readings, not by how long sleep() took on a busy machine.
    assert before - 1e-6 <= busy["a:1"] <= after + 1e-6
    assert s.elapsed_s - after - 1e-6 <= busy["b:1"] <= s.elapsed_s - before + 1e-6  # b's stretch is still going on
    assert s.agents[0].kv_used == pytest.approx(0.7) and s.agents[1].kv_used is None
    (la, lb) = UTILISATION.findall("\n".join(utilisation_lines(s)))
    assert la[:3] == ("a:1", "75.0", "75.0") and lb[:3] == ("b:1", "25.0", "25.0") and la[4] == "70"
    metrics.agent("c:1").last_error = "UNAVAILABLE: connection refused"  # listed, never came up
    assert utilisation_lines(metrics.snapshot())[-1] == \
        "  c:1  never ready (state at the end: connecting: UNAVAILABLE: connection refused)"


@pytest.mark.slow
def test_agents_of_different_speed_and_memory_all_stay_busy(tmp_path):
    """Three simulated agents, the fastest with the most KV: each gets work in proportion to its speed and
    none idles while work is queued."""
    speeds, blocks = [24_000, 12_000, 6_000], [4000, 1500, 600]
    agents = []
    try:
        for i, (speed, kv) in enumerate(zip(speeds, blocks)):
            args = argparse.Namespace(agents=1, engine="simulated", tokens_per_s=speed,
                                      agent_args=f"--num-kv-blocks {kv}")
            (tmp_path / str(i)).mkdir()
            agents += run_local.start_agents(args, tmp_path / str(i))
        r = subprocess.run([*CLI, "coordinator", "--agents", ",".join(a.address for a in agents), "--scenario",
                            "Offline", "--max-samples", "600", "--output", str(tmp_path / "out"), "--progress", "0"],
                           capture_output=True, text=True, timeout=180)
    finally:
        run_local.stop_agents(agents)
    assert r.returncode == 1 and "Exit status 1: LoadGen's result is INVALID" in r.stdout, r.stdout + r.stderr  # 600 s min
    rows = {m[0]: [float(x) for x in m[1:]] for m in UTILISATION.findall(r.stdout)}
    assert set(rows) == {a.address for a in agents}, r.stdout
    for agent, speed in zip(agents, speeds):
        queries, tokens, busy, kv = rows[agent.address]
        assert tokens == pytest.approx(100 * speed / sum(speeds), abs=5), (agent.address, r.stdout)
        assert busy > 85 and kv > 50, (agent.address, r.stdout)
