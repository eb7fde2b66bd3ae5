"""The agent's gRPC face: llmbench.v1.Agent, grpc.health.v1 and reflection on one grpc.aio server.

The engine runs on its own thread. Its sinks only hand each StepOutput to the event loop
(call_soon_threadsafe into an asyncio.Queue); every aio object stays on the loop.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import OVERALL_HEALTH
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from llmbench.agent.engine_watch import DEFAULT_STALL_S, watch_engine
from llmbench.agent.interceptors import MalformedRequestInterceptor
from llmbench.common.ports import bind
from llmbench.agent.screening import screen, size_problem
from llmbench.agent.status import StatusReporter
from llmbench.agent.tokenizer import decode, encode, load_tokenizer
from llmbench.agent.types import Engine, ErrorCode, Request, StepOutput
from llmbench.common.auth import ServerSecurity
from llmbench.proto import pb, rpc

log = logging.getLogger("llmbench.agent")

AGENT_SERVICE = pb.DESCRIPTOR.services_by_name["Agent"].full_name
DEFAULT_STATUS_INTERVAL_MS = 200
DEFAULT_GENERATE_TOKENS = 128
MAX_MESSAGE_BYTES = 64 << 20  # a bigger request gets RESOURCE_EXHAUSTED before any of it is parsed
MAX_TEXT_CHARS_PER_TOKEN = 64  # Generate text longer than this x max_context cannot fit: refused untokenized
SERVER_OPTIONS = [
    ("grpc.so_reuseport", 0),  # a second agent on the same port must fail, not share it
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),  # find dead coordinators
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.ping_timeout_ms", 5_000),  # what gRPC 1.84 actually waits for a ping's answer
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 1_000),  # let coordinators ping us often
    ("grpc.http2.max_ping_strikes", 0),
]
_GRPC_CODE = {ErrorCode.TOO_LONG: grpc.StatusCode.OUT_OF_RANGE, ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL}
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


@dataclass
class _Abort:
    message: str


_END = object()  # the client closed its request side
_CLOSING = object()  # the agent is shutting down: end the stream once its queries are done


def step_result(out: StepOutput) -> pb.StepResult:
    return pb.StepResult(step=out.step, ids=out.ids, counts=out.counts, tokens=out.tokens,
                         finished_ids=[i for i, _ in out.finished],
                         finish_reasons=[int(r) for _, r in out.finished],
                         errors=[pb.QueryError(id=i, code=int(c), message=m) for i, c, m in out.errors])


def _queue_sink(queue: asyncio.Queue) -> Callable[[StepOutput], None]:
    loop = asyncio.get_running_loop()

    def sink(out: StepOutput) -> None:  # engine thread: hand over, never block
        with contextlib.suppress(RuntimeError):  # loop already closed: nobody is listening
            loop.call_soon_threadsafe(queue.put_nowait, out)
    return sink


class AgentServicer(rpc.AgentServicer):
    def __init__(self, engine: Engine, reporter: StatusReporter) -> None:
        self.engine = engine
        self.reporter = reporter
        self.tokenizer: Any | None = None
        self.closing = asyncio.Event()
        self._serve_queues: set[asyncio.Queue] = set()
        self._calls = 0  # Serve and Generate calls in progress
        self._idle = asyncio.Event()
        self._idle.set()

    def close(self) -> None:
        self.closing.set()
        for queue in self._serve_queues:
            queue.put_nowait(_CLOSING)

    async def wait_idle(self, timeout: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)

    def _begin_call(self) -> None:
        self._calls += 1
        self._idle.clear()

    def _end_call(self) -> None:
        self._calls -= 1
        if not self._calls:
            self._idle.set()

    async def _check_ready(self, context: grpc.aio.ServicerContext) -> None:
        if not self.reporter.ready:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "agent is still loading the model")
        if self.closing.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "agent is shutting down")

    async def Serve(self, request_iterator: AsyncIterator[pb.ServeRequest], context) -> AsyncIterator[pb.StepResult]:
        await self._check_ready(context)
        queue: asyncio.Queue = asyncio.Queue()
        sink = _queue_sink(queue)
        open_ids: set[int] = set()
        self._serve_queues.add(queue)
        self._begin_call()
        reader = asyncio.create_task(self._read_requests(request_iterator, sink, queue, open_ids))
        closing = False
        try:
            while True:
                item = await queue.get()
                if isinstance(item, StepOutput):
                    open_ids.difference_update(i for i, _ in item.finished)
                    open_ids.difference_update(i for i, c, _ in item.errors if c != ErrorCode.DUPLICATE_ID)
                    yield step_result(item)
                    if closing and not open_ids:
                        return
                elif item is _END:
                    return  # closing the request side cancels what still runs (see the .proto)
                elif item is _CLOSING:
                    closing = True
                    if not open_ids:
                        return
                else:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, item.message)
        finally:
            self._end_call()
            reader.cancel()
            self.engine.drop_sink(sink)
            self._serve_queues.discard(queue)

    async def _read_requests(self, request_iterator, sink, queue: asyncio.Queue, open_ids: set[int]) -> None:
        try:
            async for req in request_iterator:
                kind = req.WhichOneof("kind")
                if kind == "submit":
                    queries = req.submit.queries
                    if self.closing.is_set():
                        queue.put_nowait(StepOutput(0, errors=[(q.id, ErrorCode.INTERNAL, "agent is shutting down")
                                                               for q in queries]))
                        continue
                    refused, accepted = screen(queries, open_ids, self.engine.info.max_context)
                    if refused.errors:
                        refused.step = self.engine.stats().steps_total  # keeps steps monotonic on the stream
                        queue.put_nowait(refused)
                    open_ids.update(r.id for r in accepted)
                    if accepted:
                        self.engine.submit(accepted, sink)
                elif kind == "cancel":
                    self.engine.cancel(list(req.cancel.ids), sink)
                else:
                    queue.put_nowait(_Abort("ServeRequest carries neither submit nor cancel"))
                    return
            queue.put_nowait(_END)
        except Exception as exc:  # a broken request stream ends this stream only
            queue.put_nowait(_Abort(f"cannot read the request stream: {exc}"))

    async def WatchStatus(self, request: pb.StatusRequest, context) -> AsyncIterator[pb.AgentStatus]:
        interval = max(request.interval_ms or DEFAULT_STATUS_INTERVAL_MS, 10) / 1000
        while not self.closing.is_set():
            yield self.reporter.status()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.closing.wait(), interval)

    async def Generate(self, request: pb.GenerateRequest, context) -> AsyncIterator[pb.GenerateResponse]:
        await self._check_ready(context)
        kind = request.WhichOneof("prompt")
        max_context = self.engine.info.max_context
        if kind == "text":
            if self.tokenizer is None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                     f"model {self.engine.info.name} has no tokenizer; send token ids")
            if len(request.text) > MAX_TEXT_CHARS_PER_TOKEN * max_context:
                await context.abort(grpc.StatusCode.OUT_OF_RANGE, f"text of {len(request.text)} characters cannot "
                                                                  f"fit the context of {max_context} tokens")
            prompt = await asyncio.to_thread(encode, self.tokenizer, request.text)  # the loop keeps serving
        elif kind == "tokens":
            prompt = request.tokens.ids
        else:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "GenerateRequest needs text or tokens")
        problem = size_problem(len(prompt), len(request.stop_token_ids), max_context)
        if problem is not None:
            await context.abort(_GRPC_CODE.get(problem[0], grpc.StatusCode.INVALID_ARGUMENT), problem[1])
        prompt = list(prompt)
        queue: asyncio.Queue = asyncio.Queue()
        sink = _queue_sink(queue)
        self.engine.submit([Request(0, prompt, request.max_new_tokens or DEFAULT_GENERATE_TOKENS,
                                    request.min_new_tokens, tuple(request.stop_token_ids), request.ignore_eos)], sink)
        output: list[int] = []
        self._begin_call()
        try:
            while True:
                out: StepOutput = await queue.get()
                if out.errors:
                    _, code, message = out.errors[0]
                    await context.abort(_GRPC_CODE.get(code, grpc.StatusCode.INVALID_ARGUMENT), message)
                output.extend(out.tokens)
                if out.finished:
                    text = decode(self.tokenizer, output) if self.tokenizer is not None else ""
                    yield pb.GenerateResponse(tokens=out.tokens, finish_reason=int(out.finished[0][1]), text=text)
                    return
                if out.tokens:
                    yield pb.GenerateResponse(tokens=out.tokens)
        finally:
            self._end_call()
            self.engine.drop_sink(sink)


def _in_thread(fn: Callable[[], Any], name: str) -> asyncio.Future:
    """Run fn on a daemon thread (a load that is still running must not keep the process alive)."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if not fut.done():
            fut.set_exception(exc) if exc is not None else fut.set_result(result)

    def work() -> None:
        try:
            result = fn()
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)
    threading.Thread(target=work, name=name, daemon=True).start()
    return fut


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
        self.servicer.tokenizer = await _in_thread(start_engine, "engine-load")
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
            await _in_thread(self.engine.stop, "engine-stop")

    async def _set_health(self, status: int) -> None:
        for service in (OVERALL_HEALTH, AGENT_SERVICE):
            await self.health.set(service, status)

    async def _on_engine_health(self, healthy: bool) -> None:
        self.healthy = healthy
        await self._set_health(health_pb2.HealthCheckResponse.SERVING if healthy
                               else health_pb2.HealthCheckResponse.NOT_SERVING)
