"""The agent process's gRPC server: llmbench.v1.Agent, grpc.health.v1 and reflection on one grpc.aio
server, an optional plaintext health port, and the load → SERVING → drain lifecycle."""
from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import OVERALL_HEALTH
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from llmbench.agent.engine.watch import DEFAULT_STALL_S, watch_engine
from llmbench.common.malformed import MalformedRequestInterceptor
from llmbench.agent.server.servicer import AgentServicer
from llmbench.agent.server.status import StatusReporter
from llmbench.agent.model.tokenizer import load_tokenizer
from llmbench.agent.engine.types import Engine
from llmbench.common.auth import ServerSecurity
from llmbench.common.ports import bind
from llmbench.common.threads import in_daemon_thread
from llmbench.proto import MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES, pb, rpc

log = logging.getLogger("llmbench.agent")

AGENT_SERVICE = pb.DESCRIPTOR.services_by_name["Agent"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SERVER_OPTIONS = [
    ("grpc.so_reuseport", 0),  # a second agent on the same port must fail, not share it
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),  # find dead coordinators
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.ping_timeout_ms", 5_000),  # what gRPC 1.84 actually waits for a ping's answer
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 1_000),  # let coordinators ping us often
    ("grpc.http2.max_ping_strikes", 0),
    # Windows stay at their defaults: with BDP probing they grow, and a body the agent refuses (too large,
    # or sent without the token) was buffered up to them first, hundreds of MiB under 16 such calls.
    ("grpc.http2.bdp_probe", 0),
]


class AgentServer:
    """One agent: bind first (health says NOT_SERVING), then load and warm, then SERVING."""

    def __init__(self, engine: Engine, agent_id: str = "", node_name: str = "",
                 security: ServerSecurity | None = None, stall_s: float = DEFAULT_STALL_S) -> None:
        self.engine = engine
        self.agent_id = agent_id
        self.node_name = node_name
        self.security = security or ServerSecurity()
        self.stall_s = stall_s
        self.port = 0
        self.health_port = 0
        self.healthy = False  # ready, and the engine steps whenever it has work
        self._engine_started = False
        self._health_server: grpc.aio.Server | None = None
        self._watch: asyncio.Future | None = None

    @property
    def ready(self) -> bool:
        return self.reporter.ready

    async def start(self, host: str, port: int, health_port: int | None = None) -> int:
        """Bind the agent port (TLS and token as self.security says) and, if health_port is given, a
        plaintext health-only port for probes that cannot speak TLS (kubelet's gRPC probes)."""
        self.reporter = StatusReporter(self.engine, self.agent_id, self.node_name)
        self.servicer = AgentServicer(self.engine, self.reporter)
        self.health = HealthServicer()
        self.server = grpc.aio.server(options=SERVER_OPTIONS,
                                      interceptors=[*self.security.interceptors(), MalformedRequestInterceptor()])
        rpc.add_AgentServicer_to_server(self.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection([AGENT_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME], self.server)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port = bind(self.server, host, port, self.security.credentials())
        if health_port is not None:
            self._health_server = grpc.aio.server(options=SERVER_OPTIONS[:1])
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
            self.health_port = bind(self._health_server, host, health_port, None)
            await self._health_server.start()
        wildcard = host in ("", "0.0.0.0", "::", "[::]")
        self.reporter.agent_id = self.agent_id or f"{socket.gethostname() if wildcard else host}:{self.port}"
        await self.server.start()
        return self.port

    async def load(self) -> None:
        """Load and warm the engine off the loop, then flip health to SERVING."""
        def start_engine() -> Any:
            self.engine.start()
            self._engine_started = True
            return load_tokenizer(self.engine.info.model_path)
        self.servicer.tokenizer = await in_daemon_thread(start_engine, name="engine-load")
        self.reporter.ready = self.healthy = True
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._watch = asyncio.ensure_future(watch_engine(self.engine, self.stall_s, self._on_engine_health))
        i = self.engine.info
        log.info("ready: model %s (%s engine, %s, %s), tokenizer %s", i.name, i.engine, i.device, i.dtype,
                 "yes" if self.servicer.tokenizer is not None else "none")

    async def stop(self, grace_s: float) -> None:
        """NOT_SERVING, stop accepting calls, let running queries finish within grace_s, stop the engine."""
        self.healthy = False
        if self._watch is not None:
            self._watch.cancel()
        await self.health.enter_graceful_shutdown()
        self.servicer.close()  # new Serve/Generate calls get UNAVAILABLE, status streams end
        await self.servicer.wait_idle(grace_s)
        await self.server.stop(0.1)  # what is left: health watches and queries past the grace period
        if self._health_server is not None:
            await self._health_server.stop(0.1)
        if self._engine_started:
            await in_daemon_thread(self.engine.stop, name="engine-stop")
            if self.engine.step_costs.snapshot():  # what each step kind cost over the agent's life
                log.info("step costs:\n%s", "\n".join(self.engine.step_costs.table()))

    async def _set_health(self, status: int) -> None:
        for service in (OVERALL_HEALTH, AGENT_SERVICE):
            await self.health.set(service, status)

    async def _on_engine_health(self, healthy: bool) -> None:
        self.healthy = healthy
        await self._set_health(health_pb2.HealthCheckResponse.SERVING if healthy
                               else health_pb2.HealthCheckResponse.NOT_SERVING)
