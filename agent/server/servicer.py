"""llmbench.v1.Agent: Serve streams, status streams and Generate, over the engine's thread-safe API.

The engine runs on its own thread. Its sinks only hand each StepOutput to the event loop
(call_soon_threadsafe into an asyncio.Queue); every aio object stays on the loop.
"""
from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import grpc

from llmbench.agent.server import query_errors
from llmbench.agent.server.screening import screen, size_problem
from llmbench.agent.server.status import StatusReporter
from llmbench.agent.model.tokenizer import decode, encode
from llmbench.agent.engine.types import Engine, ErrorCode, Request, StepOutput
from llmbench.proto import pb, rpc

DEFAULT_STATUS_INTERVAL_MS = 200
DEFAULT_GENERATE_TOKENS = 128
MAX_TEXT_CHARS_PER_TOKEN = 64  # Generate text longer than this x max_context cannot fit: refused untokenized
_GRPC_CODE = {ErrorCode.TOO_LONG: grpc.StatusCode.OUT_OF_RANGE, ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL}


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
                    query_errors.count(item.errors)
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
        except grpc.aio.AbortError:  # a body that did not parse: the interceptor has refused the stream
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
            query_errors.count([(0, *problem)])
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
                    query_errors.count(out.errors)
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
