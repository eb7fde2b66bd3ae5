"""A hung engine inside a live agent process (its gRPC loop and status reports go on, the engine thread
is stuck, like a wedged GPU kernel): the agent turns health NOT_SERVING (and so withholds its systemd
watchdog pings), and the coordinator, seeing no step for its queries, moves them elsewhere. A slow
engine (steps longer than the stall timeout, as a real model on a few CPU cores) is neither."""
from __future__ import annotations

import asyncio
import threading
import time
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmbench.agent.server.grpc_server import AgentServer
from llmbench.agent.engine.simulated import SimulatedEngine
from llmbench.agent.engine.types import EngineConfig
from llmbench.common.stall import hung
from llmbench.coordinator.mesh.agent_link import AgentLink, LinkConfig
from llmbench.coordinator.mesh.dispatch import DispatchConfig, Pool
from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.proto import pb, rpc

from pool_harness import Recorder, jobs

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


E = TypeVar("E", bound=SimulatedEngine)


class WedgeableEngine(SimulatedEngine):
    """A simulated engine whose step can be made to hang until released."""

    def __init__(self, cfg: EngineConfig) -> None:
        super().__init__(cfg)
        self.release = threading.Event()
        self.release.set()
        self.hung = threading.Event()

    def wedge(self) -> None:
        self.release.clear()

    def _generate(self, outs):
        if not self.release.is_set():
            self.hung.set()
            self.release.wait()
        return super()._generate(outs)


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class SlowEngine(SimulatedEngine):
    """Every step takes step_s: the engine works, slower than the stall timeout."""

    def __init__(self, cfg: EngineConfig, step_s: float) -> None:
        super().__init__(cfg)
        self.step_s = step_s

    def _generate(self, outs):
        time.sleep(self.step_s)
        return super()._generate(outs)


def wedgeable(tokens_per_s: float) -> WedgeableEngine:
    return WedgeableEngine(EngineConfig(engine="simulated", tokens_per_s=tokens_per_s))


def start_agent(engine: E, stall_s: float) -> tuple[LoopThread, AgentServer, E]:
    lt = LoopThread()
    server = AgentServer(engine, "agent", "node", stall_s=stall_s)
    lt.call(server.start("127.0.0.1", 0))
    lt.call(server.load())
    return lt, server, engine


def health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_hung_engine_turns_health_not_serving_until_it_steps_again():
    lt, server, engine = start_agent(wedgeable(2000), stall_s=0.5)
    try:
        engine.wedge()
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            replies = rpc.AgentStub(channel).Generate(pb.GenerateRequest(tokens=pb.TokenList(ids=[1]),
                                                                         max_new_tokens=4, ignore_eos=True), timeout=30)
            assert engine.hung.wait(5)
            start = time.monotonic()
            while health(server.port) == SERVING:
                assert time.monotonic() - start < 3, "health stayed SERVING with a hung engine"
                time.sleep(0.05)
            print(f"hung engine: NOT_SERVING after {time.monotonic() - start:.2f} s (stall limit 0.5 s)")
            assert server.healthy is False  # what the systemd watchdog pings follow
            engine.release.set()
            assert sum(len(r.tokens) for r in replies) == 4
        deadline = time.monotonic() + 3
        while health(server.port) != SERVING:
            assert time.monotonic() < deadline, "health did not come back once the engine stepped"
            time.sleep(0.05)
        assert server.healthy is True
        # An idle engine makes no steps and is healthy all the same.
        time.sleep(1.0)
        assert health(server.port) == SERVING
    finally:
        engine.release.set()
        lt.call(server.stop(0.5))
        lt.close()


def test_coordinator_moves_queries_off_a_hung_engine():
    hung_lt, hung, hung_engine = start_agent(wedgeable(500), stall_s=0.5)
    good_lt, good, _ = start_agent(wedgeable(20_000), stall_s=0.5)
    link_cfg = LinkConfig(agent_timeout_s=5.0, stall_s=1.5, status_interval_ms=50)

    async def scenario() -> tuple[Recorder, Pool, float]:
        pool = Pool(lambda address, p: AgentLink(address, p, link_cfg), RunMetrics(), DispatchConfig(reconnect_s=0.2))
        rec = Recorder()
        pool.listener = rec
        hung_address, good_address = f"127.0.0.1:{hung.port}", f"127.0.0.1:{good.port}"
        pool.add_agent(hung_address)
        await pool.wait_ready(5, 5)
        pool.submit(jobs(20, prompt_len=10, max_new=32))
        while not any(j.tokens for j in pool.slots[hung_address].inflight.values()):
            await asyncio.sleep(0.01)
        hung_engine.wedge()
        wedged = time.monotonic()
        pool.add_agent(good_address)  # somewhere for the queries to go
        while pool.slots[hung_address].counters.losses == 0:
            assert time.monotonic() - wedged < 10, "the hung engine was not detected"
            await asyncio.sleep(0.02)
        detected = time.monotonic() - wedged
        while len(rec.done) < 20:
            assert time.monotonic() - wedged < 20, f"{len(rec.done)} of 20 done"
            await asyncio.sleep(0.02)
        # Reconnected, but its health says NOT_SERVING: no new work goes there.
        assert pool.slots[hung_address].capacity is None and not pool.slots[hung_address].inflight
        await pool.close()
        return rec, pool, detected
    try:
        rec, pool, detected = asyncio.run(scenario())
    finally:
        hung_engine.release.set()
        for lt, server in ((hung_lt, hung), (good_lt, good)):
            lt.call(server.stop(0.5))
            lt.close()
    counters = pool.metrics.agents[f"127.0.0.1:{hung.port}"]
    print(f"hung engine detected by the coordinator after {detected:.2f} s: {counters.last_error}")
    assert "a step under way for" in counters.last_error and "(engine hung)" in counters.last_error
    assert 1.0 < detected < 3.0 and counters.redispatched > 0
    assert rec.completions == 20 and all(len(j.tokens) == 32 and not j.error for j in rec.done.values())


def test_a_slow_engine_is_neither_unhealthy_nor_relieved_of_its_queries():
    """Steps of 0.8 s against a stall timeout of 0.3 s on both sides: once one step has shown what a step
    costs there (the paged engine's timed warm-up does that at start), a step under way is slow, not hung.
    Nothing is re-dispatched, every query runs once on the agent, and health stays SERVING."""
    engine = SlowEngine(EngineConfig(engine="simulated", tokens_per_s=1e6), step_s=0.8)
    lt, server, _ = start_agent(engine, stall_s=0.3)
    link_cfg = LinkConfig(agent_timeout_s=5.0, stall_s=0.3, status_interval_ms=50)
    address = f"127.0.0.1:{server.port}"

    async def scenario() -> tuple[Recorder, Pool, list[int]]:
        pool = Pool(lambda a, p: AgentLink(a, p, link_cfg), RunMetrics(), DispatchConfig(reconnect_s=0.2))
        rec = Recorder()
        pool.listener = rec
        pool.add_agent(address)
        await pool.wait_ready(5, 5)
        pool.submit(jobs(4, prompt_len=10, max_new=3))
        seen = []
        started = time.monotonic()
        while len(rec.done) < 4:
            assert time.monotonic() - started < 20, f"{len(rec.done)} of 4 done"
            seen.append(await asyncio.to_thread(health, server.port))
            await asyncio.sleep(0.1)
        await pool.close()
        return rec, pool, seen
    try:
        first = rpc_generate(server.port, max_new_tokens=1)  # one finished step: 0.8 s is what a step costs
        assert first == 1 and server.engine.stats().slowest_step_s >= 0.8
        rec, pool, seen = asyncio.run(scenario())
        received = server.engine.stats().queries_received_total
    finally:
        lt.call(server.stop(0.5))
        lt.close()
    counters = pool.metrics.agents[address]
    assert counters.losses == 0 and counters.redispatched == 0, counters.last_error
    assert rec.completions == 4 and all(len(j.tokens) == 3 and not j.error for j in rec.done.values())
    assert received == 1 + 4  # the Generate call and each query once: no work was started twice
    assert seen and all(h == SERVING for h in seen), seen


def rpc_generate(port: int, max_new_tokens: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        replies = rpc.AgentStub(channel).Generate(pb.GenerateRequest(tokens=pb.TokenList(ids=[1]),
                                                                     max_new_tokens=max_new_tokens,
                                                                     ignore_eos=True), timeout=30)
        return sum(len(r.tokens) for r in replies)


def test_the_rule_tells_a_slow_step_from_a_hung_one():
    assert hung(idle_s=0.5, step_running_s=0.0, slowest_step_s=0.0, stall_s=1.0) is None  # not yet
    assert "none under way" in hung(2.0, 0.0, 0.1, 1.0)  # work and no step at all: a dead engine thread
    assert hung(idle_s=30.0, step_running_s=30.0, slowest_step_s=4.0, stall_s=1.0) is None  # within 10x 4 s
    assert "past 40 s" in hung(idle_s=41.0, step_running_s=41.0, slowest_step_s=4.0, stall_s=1.0)
    assert "past 60 s" in hung(idle_s=61.0, step_running_s=61.0, slowest_step_s=0.01, stall_s=60.0)
