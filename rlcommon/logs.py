"""Log output: the classic text lines, or one JSON object per line.

JSON lines carry `time`, `level`, `logger`, `message` and, where they apply, `lease_id`, `job_id`
and `model`. Those come from the record (`log.info(..., extra={"lease_id": ...})`) or, failing that,
from the call being served: a handler wrapped by `with_call_fields` puts the request's ids in a
context variable, which the tasks a call starts inherit.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final, cast

import grpc

from .interceptors import Context, Handler

FORMATS: Final = ("text", "json")
FIELDS: Final = ("lease_id", "job_id", "model")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_call_fields: ContextVar[Mapping[str, str] | None] = ContextVar("rl_log_fields", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = _call_fields.get() or {}
        for name in FIELDS:
            value = getattr(record, name, None) or context.get(name)
            if value:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(level: str, fmt: str) -> None:
    """Root logging to stderr in `fmt` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def _fields_of(request: object) -> dict[str, str]:
    fields = {name: getattr(request, name, "") for name in FIELDS}
    return {name: value for name, value in fields.items() if value and isinstance(value, str)}


Behaviour = Callable[[Any, Context], Awaitable[Any]]


def _with_fields(behaviour: Behaviour) -> Behaviour:
    async def serve(request: Any, context: Context) -> Any:
        reset = _call_fields.set(_fields_of(request))
        try:
            return await behaviour(request, context)
        finally:
            _call_fields.reset(reset)

    return serve


def with_call_fields(handler: Handler) -> Handler:
    """`handler`, if unary, putting its request's ids (job_id, lease_id, model) on the lines logged while serving it."""
    if handler.unary_unary is None:
        return handler
    return grpc.unary_unary_rpc_method_handler(
        _with_fields(cast(Behaviour, handler.unary_unary)),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
