"""A hung engine inside a live agent process (its gRPC loop and status reports go on, the engine thread
is stuck, like a wedged GPU kernel): the agent turns health NOT_SERVING (and so withholds its systemd
watchdog pings), and the coordinator, seeing no step result for its queries, moves them elsewhere."""
from __future__ import annotations

import asyncio
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmbench.agent.server.grpc_server import AgentServer
from llmbench.agent.engine.simulated import SimulatedEngine
from llmbench.agent.engine.types import EngineConfig
from llmbench.coordinator.mesh.agent_link import AgentLink, LinkConfig
from llmbench.coordinator.mesh.dispatch import DispatchConfig, Pool
from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.proto import pb, rpc

from pool_harness import Recorder, jobs

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


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


def start_agent(tokens_per_s: float, stall_s: float) -> tuple[LoopThread, AgentServer, WedgeableEngine]:
    lt = LoopThread()
    engine = WedgeableEngine(EngineConfig(engine="simulated", tokens_per_s=tokens_per_s))
    server = AgentServer(engine, "agent", "node", stall_s=stall_s)
    lt.call(server.start("127.0.0.1", 0))
    lt.call(server.load())
    return lt, server, engine


def health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_hung_engine_turns_health_not_serving_until_it_steps_again():
    lt, server, engine = start_agent(tokens_per_s=2000, stall_s=0.5)
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
    hung_lt, hung, hung_engine = start_agent(tokens_per_s=500, stall_s=0.5)
    good_lt, good, _ = start_agent(tokens_per_s=20_000, stall_s=0.5)
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
    assert "no step result for 1.5 s with queries in flight (engine hung)" in counters.last_error
    assert 1.0 < detected < 3.0 and counters.redispatched > 0
    assert rec.completions == 20 and all(len(j.tokens) == 32 and not j.error for j in rec.done.values())
