"""The agent's gRPC server over real loopback gRPC, with the simulated engine behind it."""
import asyncio
import queue
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from llmbench.agent.server.grpc_server import AgentServer
from llmbench.agent.engine.simulated import SimulatedEngine
from llmbench.agent.engine.types import EngineConfig, token_runs
from llmbench.proto import pb, rpc

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


class RunningAgent:
    """An AgentServer on its own event loop thread; tests talk to it with blocking clients."""

    def __init__(self, load: bool = True, **engine_kw):
        self.engine = SimulatedEngine(EngineConfig(engine="simulated", **engine_kw))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = AgentServer(self.engine, "test-agent", "test-node")
        self.port = self.call(self.server.start("127.0.0.1", 0))
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = rpc.AgentStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        if load:
            self.call(self.server.load())

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.channel.close()
        self.call(self.server.stop(0.5))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class ServeStream:
    """One Serve call; requests go in through a queue so the request side stays open."""

    def __init__(self, stub, timeout: float = 30):
        self.requests: queue.Queue = queue.Queue()
        self.responses = stub.Serve(iter(self.requests.get, None), timeout=timeout)
        self.tokens: dict[int, list[int]] = {}
        self.finished: dict[int, int] = {}
        self.errors: dict[int, tuple[int, str]] = {}
        self.duplicates: list[int] = []
        self.results: list[pb.StepResult] = []

    def submit(self, *queries: pb.Query) -> None:
        self.requests.put(pb.ServeRequest(submit=pb.QueryBatch(queries=queries)))

    def cancel(self, *ids: int) -> None:
        self.requests.put(pb.ServeRequest(cancel=pb.Cancel(ids=ids)))

    def close(self) -> None:
        self.requests.put(None)

    def read(self) -> pb.StepResult:
        r = next(self.responses)
        self.results.append(r)
        for qid, tokens in token_runs(r):
            self.tokens.setdefault(qid, []).extend(tokens)
        assert sum(r.counts) == len(r.tokens)
        for qid, reason in zip(r.finished_ids, r.finish_reasons):
            assert qid not in self.finished and qid not in self.errors, f"query {qid} ended twice"
            self.finished[qid] = reason
        for e in r.errors:
            if e.code == pb.ERROR_CODE_DUPLICATE_ID:
                self.duplicates.append(e.id)
                continue
            assert e.id not in self.finished and e.id not in self.errors, f"query {e.id} ended twice"
            self.errors[e.id] = (e.code, e.message)
        return r

    def read_until_ended(self, n: int) -> None:
        while len(self.finished) + len(self.errors) < n:
            self.read()


@pytest.fixture
def agent():
    a = RunningAgent(tokens_per_s=5_000, max_context=4096)
    yield a
    a.close()


def q(qid: int, prompt, max_new: int = 8, **kw) -> pb.Query:
    return pb.Query(id=qid, prompt_tokens=prompt, max_new_tokens=max_new, **kw)


def test_serve_many_queries_on_one_stream(agent):
    s = ServeStream(agent.stub)
    s.submit(*[q(i, [1, 2, i], 4 + i % 9, ignore_eos=True) for i in range(60)])
    s.submit(*[q(i, [3, i], 5, ignore_eos=True) for i in range(60, 100)])
    s.read_until_ended(100)
    assert set(s.finished) == set(range(100)) and not s.errors
    assert all(r == pb.FINISH_REASON_LENGTH for r in s.finished.values())
    assert all(len(s.tokens[i]) == (4 + i % 9 if i < 60 else 5) for i in range(100))
    assert max(len(r.ids) for r in s.results) > 1, "one StepResult should carry several queries"
    steps = [r.step for r in s.results]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    s.close()
    assert list(s.responses) == []  # the agent ends the stream when the client closes its side


def test_cancel_and_client_close(agent):
    s = ServeStream(agent.stub)
    s.submit(q(1, [5], 4_000), q(2, [6], 4_000))
    while 1 not in s.tokens:
        s.read()
    s.cancel(1, 77)
    while 1 not in s.finished:
        s.read()
    assert s.finished == {1: pb.FINISH_REASON_CANCELLED}
    assert agent.engine.stats().running == 1
    s.close()  # closing the request side drops query 2 without a finish
    for _ in s.responses:
        pass
    deadline = time.monotonic() + 5
    while agent.engine.stats().running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert agent.engine.stats().running == 0 and 2 not in s.finished


def test_bad_queries_fail_alone(agent):
    s = ServeStream(agent.stub)
    s.submit(q(1, [], 4), q(2, [1, 500_000], 4), q(3, [1], 0), q(4, [1] * 4090, 10), q(5, [1, 2], 4_000),
             q(6, [1], -3), q(7, [3], 4, ignore_eos=True))
    s.submit(q(5, [1], 4))  # the id is running on this stream
    while len(s.errors) < 5 or not s.duplicates or 7 not in s.finished:
        s.read()
    assert {i: c for i, (c, _) in s.errors.items()} == {
        1: pb.ERROR_CODE_INVALID_QUERY, 2: pb.ERROR_CODE_INVALID_QUERY, 3: pb.ERROR_CODE_INVALID_QUERY,
        4: pb.ERROR_CODE_TOO_LONG, 6: pb.ERROR_CODE_INVALID_QUERY}
    assert s.errors[1][1] == "prompt is empty" and "500000" in s.errors[2][1] and "max_new_tokens" in s.errors[3][1]
    assert s.duplicates == [5] and len(s.tokens[7]) == 4
    s.cancel(5)
    while 5 not in s.finished:
        s.read()
    assert s.finished[5] == pb.FINISH_REASON_CANCELLED
    s.close()


def test_malformed_request_aborts_only_its_stream(agent):
    good = ServeStream(agent.stub)
    good.submit(q(1, [1], 300, ignore_eos=True))
    bad = ServeStream(agent.stub)
    bad.requests.put(pb.ServeRequest())
    with pytest.raises(grpc.RpcError) as err:
        bad.read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "neither submit nor cancel" in err.value.details()
    good.read_until_ended(1)
    assert len(good.tokens[1]) == 300
    good.close()


def test_watch_status(agent):
    stream = agent.stub.WatchStatus(pb.StatusRequest(interval_ms=50), timeout=30)
    first = next(stream)
    assert (first.agent_id, first.node_name, first.ready) == ("test-agent", "test-node", True)
    assert (first.model.name, first.model.engine, first.model.vocab_size) == ("simulated", "simulated", 128256)
    assert first.model.max_context == 4096 and list(first.model.eos_token_ids) == [128001, 128008, 128009]
    assert first.memory_kind == "host" and 0 < first.memory_free_bytes <= first.memory_total_bytes
    assert first.kv_blocks_free == first.kv_blocks_total > 0 and first.kv_block_size == 16
    assert first.kv_tokens_available == first.kv_blocks_total * 16
    assert (first.max_batch, first.max_step_tokens) == (256, 8192)
    s = ServeStream(agent.stub)
    s.submit(*[q(i, [1, i], 4_000) for i in range(20)])
    s.read()
    seen = [next(stream) for _ in range(8)]
    last = seen[-1]
    assert last.running == 20 and last.waiting == 0
    assert last.queries_received_total == 20 and last.queries_finished_total == 0
    assert last.output_tokens_total > first.output_tokens_total and last.steps_total > first.steps_total
    assert last.kv_blocks_free < last.kv_blocks_total
    assert 1_000 < last.output_tokens_per_s < 10_000, last.output_tokens_per_s  # engine paced at 5k/s
    assert last.prompt_tokens_per_s > 0
    gaps = [b.timestamp - a.timestamp for a, b in zip(seen, seen[1:])]
    assert all(0.03 < g < 1.0 for g in gaps), gaps
    s.close()
    stream.cancel()


def test_generate(agent):
    msgs = list(agent.stub.Generate(pb.GenerateRequest(tokens=pb.TokenList(ids=[1, 2, 3]), max_new_tokens=12,
                                                       ignore_eos=True), timeout=30))
    assert sum(len(m.tokens) for m in msgs) == 12
    assert [m.finish_reason for m in msgs] == [0] * (len(msgs) - 1) + [pb.FINISH_REASON_LENGTH]
    assert msgs[-1].text == ""
    default = list(agent.stub.Generate(pb.GenerateRequest(tokens=pb.TokenList(ids=[1]), max_new_tokens=0)))
    assert sum(len(m.tokens) for m in default) == 128
    cases = [(pb.GenerateRequest(text="hello"), grpc.StatusCode.INVALID_ARGUMENT, "has no tokenizer; send token ids"),
             (pb.GenerateRequest(tokens=pb.TokenList(ids=[])), grpc.StatusCode.INVALID_ARGUMENT, "prompt is empty"),
             (pb.GenerateRequest(tokens=pb.TokenList(ids=[1] * 4000), max_new_tokens=100),
              grpc.StatusCode.OUT_OF_RANGE, "context of 4096"),
             (pb.GenerateRequest(), grpc.StatusCode.INVALID_ARGUMENT, "needs text or tokens")]
    for request, code, message in cases:
        with pytest.raises(grpc.RpcError) as err:
            list(agent.stub.Generate(request, timeout=30))
        assert err.value.code() == code and message in err.value.details()


def test_health_reflection_and_shutdown():
    a = RunningAgent(load=False, tokens_per_s=1000)
    try:
        for service in ("", "llmbench.v1.Agent"):
            assert a.health.Check(health_pb2.HealthCheckRequest(service=service)).status == NOT_SERVING
        with pytest.raises(grpc.RpcError) as err:
            list(a.stub.Generate(pb.GenerateRequest(tokens=pb.TokenList(ids=[1]))))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert next(a.stub.WatchStatus(pb.StatusRequest())).ready is False
        a.call(a.server.load())
        for service in ("", "llmbench.v1.Agent"):
            assert a.health.Check(health_pb2.HealthCheckRequest(service=service)).status == SERVING

        refl = reflection_pb2_grpc.ServerReflectionStub(a.channel)
        reply = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in reply.list_services_response.service}
        assert {"llmbench.v1.Agent", "grpc.health.v1.Health"} <= names

        watch = a.health.Watch(health_pb2.HealthCheckRequest(service="llmbench.v1.Agent"), timeout=30)
        assert next(watch).status == SERVING
        s = ServeStream(a.stub)
        s.submit(q(1, [1], 20, ignore_eos=True))
        s.read()
        stopping = asyncio.run_coroutine_threadsafe(a.server.stop(5.0), a.loop)
        assert next(watch).status == NOT_SERVING
        s.read_until_ended(1)  # the running query finishes within the grace period
        assert len(s.tokens[1]) == 20
        stopping.result(10)
        assert list(s.responses) == []
    finally:
        a.channel.close()
        a.loop.call_soon_threadsafe(a.loop.stop)
        a.thread.join(5)
