"""One agent's connection: health wait, WatchStatus stream, and the long-lived Serve stream.

All of it lives on the coordinator's asyncio loop. The link reports to its Pool: `on_ready` with the
first status (nothing is sent before, so the capacity estimate has a clean baseline), `on_status`,
`on_step` per StepResult, and `on_lost` once if either stream fails, ends, or the status reports stop
(a hung agent). Before it is ready it keeps retrying quietly; `reached`/`last_error` tell the pool
why it is not ready yet.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import AsyncIterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmbench.common.auth import ClientSecurity
from llmbench.common.stall import hung
from llmbench.coordinator.mesh.job import encode_submits
from llmbench.proto import MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES, pb, rpc

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_REQUEST_BYTES),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),  # keep pinging while our side sends nothing
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]
SERVE_METHOD = f"/{pb.DESCRIPTOR.services_by_name['Agent'].full_name}/Serve"
HEALTH_POLL_S = 0.2
CLOSE_GRACE_S = 1.0  # after hanging up, how long the agent may take to end the stream

log = logging.getLogger("llmbench.coordinator")


@dataclass
class LinkConfig:
    agent_timeout_s: float = 10.0  # no status report (or no keepalive answer) for this long: agent lost
    stall_s: float = 60.0  # our queries in flight there and no step for this long: engine hung (common.stall)
    status_interval_ms: int = 100
    security: ClientSecurity = field(default_factory=ClientSecurity)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.agent_timeout_s) and 0 < self.agent_timeout_s <= 3600):
            raise ValueError(f"--agent-timeout must be > 0 and <= 3600, got {self.agent_timeout_s:g}")
        if not (math.isfinite(self.stall_s) and self.stall_s > 0):
            raise ValueError(f"--stall-timeout must be a positive number of seconds, got {self.stall_s:g}")

    def channel_options(self) -> list[tuple[str, int]]:
        # HTTP/2 pings notice a vanished host or a cut network even while no status is due.
        # gRPC 1.84 fails an unanswered ping after http2.ping_timeout_ms (default 60 s), whatever
        # keepalive_timeout_ms says: both are set.
        half_ms = max(int(self.agent_timeout_s * 500), 200)
        return [*CHANNEL_OPTIONS, ("grpc.keepalive_time_ms", half_ms), ("grpc.keepalive_timeout_ms", half_ms),
                ("grpc.http2.ping_timeout_ms", half_ms)]


def describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


class AgentLink:
    def __init__(self, address: str, pool, cfg: LinkConfig | None = None) -> None:
        self.address = address
        self.pool = pool
        self.cfg = cfg or LinkConfig()
        self.reached = False
        self.last_error = "connecting"
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()  # serialized ServeRequests
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"agent {address}")

    def send(self, queries: list[pb.Query]) -> None:
        for request in encode_submits(queries):
            self._outbox.put_nowait(request)

    def close(self) -> None:
        """Hang up: closing the request side cancels whatever still runs on the agent."""
        if not self._closing:
            self._closing = True
            self._outbox.put_nowait(None)
            asyncio.get_running_loop().call_later(CLOSE_GRACE_S, self._task.cancel)

    async def wait_closed(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        """Connect until ready (retrying quietly), then serve until the link fails: that is a loss."""
        while not self._closing:
            ready, reason = await self._attempt()
            if ready:
                if not self._closing:
                    self.pool.on_lost(self, reason)
                return
            self.last_error = reason
            await asyncio.sleep(HEALTH_POLL_S)

    async def _attempt(self) -> tuple[bool, str]:
        ready = False
        channel = self.cfg.security.aio_channel(self.address, self.cfg.channel_options())
        metadata = self.cfg.security.metadata
        try:
            stub = rpc.AgentStub(channel)
            if not await self._wait_serving(channel):
                return False, "closed"
            status_call = stub.WatchStatus(pb.StatusRequest(interval_ms=self.cfg.status_interval_ms),
                                           metadata=metadata)
            first = await status_call.read()
            if first is grpc.aio.EOF:
                return False, "the status stream ended at once"
            serve = channel.stream_stream(SERVE_METHOD, request_serializer=None,  # already bytes
                                          response_deserializer=pb.StepResult.FromString)
            serve_call = serve(self._requests(), metadata=metadata)
            if self._closing:
                return False, "closed"
            ready = True
            self.pool.on_ready(self, first)
            return True, await self._serve(serve_call, status_call, first)
        except asyncio.CancelledError:  # closed by us, or the whole coordinator is shutting down
            self._closing = True
            raise
        except grpc.aio.AioRpcError as exc:
            return ready, describe(exc)
        except Exception as exc:
            log.warning("agent %s: link failed", self.address, exc_info=True)
            return ready, describe(exc)
        finally:
            with contextlib.suppress(Exception):
                await channel.close(grace=None)

    async def _wait_serving(self, channel: grpc.aio.Channel) -> bool:
        """True once health says SERVING; False if the link was closed first."""
        health = health_pb2_grpc.HealthStub(channel)
        while not self._closing:
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0,
                                           metadata=self.cfg.security.metadata)
                self.reached = True
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
                self.last_error = f"health {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
            except grpc.aio.AioRpcError as exc:
                details = exc.details() or ""
                handshake = self.cfg.security.handshake_failure(details)
                if handshake or exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    self.reached = True  # it answered, if only to refuse our TLS
                self.last_error = handshake or describe(exc) + self.cfg.security.closed_hint(details)
            await asyncio.sleep(HEALTH_POLL_S)
        return False

    async def _requests(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._outbox.get()
            if item is None:
                return
            yield item

    async def _serve(self, serve_call, status_call, first: pb.AgentStatus) -> str:
        """Run both streams until one fails or ends, or the agent falls silent; returns why, with how
        long before that the agent was last heard from (the detection time of a sudden death)."""
        # last_step: a step result for our queries, or the agent's step count moving (it steps, our
        # queries wait their turn); the latest status also says whether a step is under way.
        last_status = last_step = time.monotonic()
        latest = first

        async def read_steps() -> str:
            nonlocal last_step
            async for step in serve_call:
                last_step = time.monotonic()
                self.pool.on_step(self, step)
            return "the agent ended the query stream"

        async def read_status() -> str:
            nonlocal last_status, last_step, latest
            while (status := await status_call.read()) is not grpc.aio.EOF:
                last_status = time.monotonic()
                if status.steps_total != latest.steps_total:
                    last_step = last_status
                latest = status
                self.pool.on_status(self, status)
            return "the agent ended the status stream"

        async def watch_silence() -> str:
            nonlocal last_step
            timeout, stall = self.cfg.agent_timeout_s, self.cfg.stall_s
            while True:
                await asyncio.sleep(min(timeout, stall) / 8)
                now = time.monotonic()
                if now - last_status > timeout:
                    return f"no status report for {timeout:g} s (agent hung or cut off)"
                if not self.pool.busy(self):
                    last_step = now
                elif why := hung(now - last_step, latest.step_running_s, latest.slowest_step_s, stall):
                    return why

        tasks = [asyncio.ensure_future(c) for c in (read_steps(), read_status(), watch_silence())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            try:
                reason = done.pop().result()
            except grpc.aio.AioRpcError as exc:
                reason = describe(exc)
            silent = time.monotonic() - max(last_status, last_step)
            return f"{reason}; last heard from {silent:.2f} s before"
        finally:
            for t in tasks:
                t.cancel()
            serve_call.cancel()
            status_call.cancel()
