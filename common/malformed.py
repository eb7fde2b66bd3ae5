"""A clear INVALID_ARGUMENT for request bodies that are not the message they claim to be, on every server.

Left to itself, grpc answers a request it cannot parse with UNKNOWN or INTERNAL ("Exception deserializing
request!") and logs a traceback per call, so a client sending junk fills the log. These interceptors parse
each body themselves: junk gets INVALID_ARGUMENT naming the message type, unary or streamed, and the log
one short line, at most one a LOG_EVERY_S (with how many it left out). `MalformedRequestInterceptor` is for
grpc.aio servers (the agent), `SyncMalformedRequestInterceptor` for grpc's thread-pool servers (the
coordinator's status channel).
"""
from __future__ import annotations

import inspect
import logging
import threading
import time
from typing import Any, Callable

import grpc
from google.protobuf.message import DecodeError

__all__ = ["MalformedRequestInterceptor", "SyncMalformedRequestInterceptor"]

log = logging.getLogger("llmbench.grpc")
LOG_EVERY_S = 10.0


class _Malformed:
    def __init__(self, error: DecodeError) -> None:
        self.message = f"malformed request: {error}"


class _Throttle:
    """One log line per LOG_EVERY_S at most, saying how many were left out since the last."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = float("-inf")
        self._left_out = 0

    def note(self, method: str, message: str) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last < LOG_EVERY_S:
                self._left_out += 1
                return
            left_out, self._left_out, self._last = self._left_out, 0, now
        more = f" ({left_out} more since the last such line)" if left_out else ""
        log.warning("refused %s: %s%s", method, message, more)


_THROTTLE = _Throttle()


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(body: bytes) -> Any:
        try:
            return deserializer(body)
        except DecodeError as exc:
            return _Malformed(exc)
    return parse


def _handler_kind(handler: grpc.RpcMethodHandler) -> str:
    return (("stream" if handler.request_streaming else "unary") + "_"
            + ("stream" if handler.response_streaming else "unary"))


def _tolerant_handler(handler: grpc.RpcMethodHandler | None, method: str, wrap: Callable) -> grpc.RpcMethodHandler | None:
    if handler is None or handler.request_deserializer is None:
        return handler
    kind = _handler_kind(handler)
    return handler._replace(request_deserializer=_tolerant(handler.request_deserializer),
                            **{kind: wrap(getattr(handler, kind), handler.request_streaming, method)})


# ---- grpc.aio -------------------------------------------------------------------------------------
async def _refuse_aio(context: grpc.aio.ServicerContext, method: str, bad: _Malformed) -> None:
    _THROTTLE.note(method, bad.message)
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, bad.message)


def _refusing_aio(behavior: Callable, streamed_requests: bool, method: str) -> Callable:
    """behavior, refusing a malformed request before it sees it (keeping the async-generator or coroutine
    form grpc.aio dispatches on); streamed requests are checked as the behavior reads them."""
    def requests(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if not streamed_requests:
            return request

        async def checked():
            async for item in request:
                if isinstance(item, _Malformed):
                    await _refuse_aio(context, method, item)
                yield item
        return checked()

    if inspect.isasyncgenfunction(behavior):
        async def stream(request: Any, context: grpc.aio.ServicerContext):
            if isinstance(request, _Malformed):
                await _refuse_aio(context, method, request)
            async for reply in behavior(requests(request, context), context):
                yield reply
        return stream

    async def call(request: Any, context: grpc.aio.ServicerContext):
        if isinstance(request, _Malformed):
            await _refuse_aio(context, method, request)
        result = behavior(requests(request, context), context)
        return await result if inspect.isawaitable(result) else result
    return call


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        method = handler_call_details.method
        return _tolerant_handler(await continuation(handler_call_details), method, _refusing_aio)


# ---- grpc's thread-pool server --------------------------------------------------------------------
def _refuse_sync(context: grpc.ServicerContext, method: str, bad: _Malformed) -> None:
    _THROTTLE.note(method, bad.message)
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, bad.message)


def _refusing_sync(behavior: Callable, streamed_requests: bool, method: str) -> Callable:
    def call(request: Any, context: grpc.ServicerContext):
        if streamed_requests:
            def checked(items=request):
                for item in items:
                    if isinstance(item, _Malformed):
                        _refuse_sync(context, method, item)
                    yield item
            request = checked()
        elif isinstance(request, _Malformed):
            _refuse_sync(context, method, request)
        return behavior(request, context)
    return call


class SyncMalformedRequestInterceptor(grpc.ServerInterceptor):
    def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        method = handler_call_details.method
        return _tolerant_handler(continuation(handler_call_details), method, _refusing_sync)
