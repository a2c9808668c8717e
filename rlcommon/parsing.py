"""Requests that cannot be parsed are INVALID_ARGUMENT saying so.

grpc.aio answers a request whose bytes do not parse with UNKNOWN and a Python exception's text;
`parsing` makes a handler that parses them itself, for the handlers that decode their requests (the
proxy's pass-through takes bytes, and decodes what it needs where it needs it). It wraps a handler
once, where the service is registered: an interceptor doing the same costs every call a few per cent
of a bare server's CPU.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, cast

import grpc
from google.protobuf.message import DecodeError

from .interceptors import Context, Handler


async def _refuse(context: Context, method: str, error: DecodeError) -> NoReturn:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the {method} request does not parse: {error}")
    raise AssertionError("abort returns only by raising")


def parsing(handler: Handler, method: str) -> Handler:
    """`handler`, a unary-request one that decodes its request, taking bytes and refusing those that do not parse."""
    parse = cast(Callable[[bytes], Any], handler.request_deserializer)
    serialize = handler.response_serializer
    if handler.unary_unary is not None:
        unary = cast(Callable[[Any, Context], Awaitable[Any]], handler.unary_unary)

        async def run(raw: bytes, context: Context) -> Any:
            try:
                request = parse(raw)
            except DecodeError as e:
                await _refuse(context, method, e)
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(run, response_serializer=serialize)
    stream = cast(Callable[[Any, Context], Any], handler.unary_stream)
    if not inspect.isasyncgenfunction(stream):
        # A handler that writes its replies with context.write and returns.
        async def written(raw: bytes, context: Context) -> None:
            try:
                request = parse(raw)
            except DecodeError as e:
                await _refuse(context, method, e)
            await stream(request, context)

        return grpc.unary_stream_rpc_method_handler(written, response_serializer=serialize)

    async def replies(raw: bytes, context: Context) -> AsyncIterator[Any]:
        try:
            request = parse(raw)
        except DecodeError as e:
            await _refuse(context, method, e)
        async with contextlib.aclosing(stream(request, context)) as inner:
            async for reply in inner:
                yield reply

    return grpc.unary_stream_rpc_method_handler(replies, response_serializer=serialize)
