"""A clear INVALID_ARGUMENT for request bodies that are not the message they claim to be.

Left to itself, grpc.aio answers a unary request it cannot parse with UNKNOWN ("Unexpected
DecodeError") and logs a traceback per call, so a client sending junk fills the agent's log. This
interceptor parses the body itself: junk gets INVALID_ARGUMENT naming the message type, quietly.
(Streamed requests, Serve's, are parsed while the servicer reads them and refused there.)
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import grpc
from google.protobuf.message import DecodeError


class _Malformed:
    def __init__(self, error: DecodeError) -> None:
        self.message = f"malformed request: {error}"


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(body: bytes) -> Any:
        try:
            return deserializer(body)
        except DecodeError as exc:
            return _Malformed(exc)
    return parse


def _refusing(behavior: Callable) -> Callable:
    """behavior, but a _Malformed request is refused before it runs (keeping the async-generator or
    coroutine form grpc.aio dispatches on)."""
    if inspect.isasyncgenfunction(behavior):
        async def stream(request: Any, context: grpc.aio.ServicerContext):
            if isinstance(request, _Malformed):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            async for reply in behavior(request, context):
                yield reply
        return stream

    async def call(request: Any, context: grpc.aio.ServicerContext):
        if isinstance(request, _Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result
    return call


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        kind = "unary_stream" if handler.response_streaming else "unary_unary"
        return handler._replace(request_deserializer=_tolerant(handler.request_deserializer),
                                **{kind: _refusing(getattr(handler, kind))})
