"""Anthropic's messages: the request as its API accepts it, the Message answer, the
`anthropic-ratelimit-*` headers and the error bodies, in Anthropic's formats."""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from . import tokens
from .calls import (
    ApiError,
    Call,
    ErrorKind,
    JsonObject,
    Outcome,
    bearer_token,
    message_list,
    optional_positive_int,
    refuse_streaming,
    required_str,
    role_of,
    text_of,
)
from .config import ApiName
from .limits import CONCURRENCY, Amounts, Dim, Level, Refused
from .timefmt import rfc3339_utc

ROLES = ("user", "assistant")
# The units Anthropic's messages give each limit.
_UNITS = {Dim.REQUESTS: "requests", Dim.INPUT: "input tokens", Dim.OUTPUT: "output tokens", Dim.TOKENS: "tokens"}
# The combined tokens headers are not one bucket's: see limit_headers.
_HEADER_INFIXES = {Dim.REQUESTS: "requests", Dim.INPUT: "input-tokens", Dim.OUTPUT: "output-tokens"}
_TOKEN_DIMS = (Dim.INPUT, Dim.OUTPUT, Dim.TOKENS)
_TYPES = {
    ErrorKind.INVALID_REQUEST: "invalid_request_error",
    ErrorKind.AUTHENTICATION: "authentication_error",
    ErrorKind.NOT_FOUND: "not_found_error",
}


class AnthropicApi:
    name: ApiName = "anthropic"
    request_id_header = "request-id"

    def api_key(self, headers: Mapping[str, str]) -> str | None:
        # Anthropic takes the key in x-api-key; its SDK sends it as a bearer token too.
        return headers.get("x-api-key") or bearer_token(headers)

    def model_of(self, body: JsonObject) -> str:
        return required_str(body, "model")

    def parse(self, body: JsonObject, model: str, default_max_tokens: int) -> Call:
        # Anthropic has no default: max_tokens is required, so default_max_tokens does not apply.
        refuse_streaming(body)
        max_tokens = optional_positive_int(body, "max_tokens")
        if max_tokens is None:
            raise ApiError(ErrorKind.INVALID_REQUEST, "Field required", ("max_tokens",))
        texts = []
        if body.get("system") is not None:
            texts.append(text_of(body["system"], ("system",), allow_none=False))
        for i, message in enumerate(message_list(body)):
            role_of(message, ("messages", i), ROLES)
            texts.append(text_of(message.get("content"), ("messages", i, "content"), allow_none=False))
        return Call(model, tokens.prompt_tokens(texts), max_tokens)

    def unknown_key(self) -> ApiError:
        return ApiError(ErrorKind.AUTHENTICATION, "invalid x-api-key")

    def unknown_model(self, model: str) -> ApiError:
        return ApiError(ErrorKind.NOT_FOUND, f"model: {model}")

    def demand(self, call: Call, cached_tokens: int) -> Amounts:
        # Anthropic: cache reads do not count toward ITPM, so only the uncached prompt is charged.
        uncached = call.prompt_tokens - cached_tokens
        return {
            Dim.REQUESTS: 1,
            Dim.INPUT: uncached,
            Dim.OUTPUT: call.max_tokens,
            Dim.TOKENS: uncached + call.max_tokens,
        }

    def usage(self, outcome: Outcome) -> Amounts:
        uncached = outcome.call.prompt_tokens - outcome.cached_tokens
        return {
            Dim.REQUESTS: 1,
            Dim.INPUT: uncached,
            Dim.OUTPUT: outcome.output_tokens,
            Dim.TOKENS: uncached + outcome.output_tokens,
        }

    def error_body(self, error: ApiError, request_id: str) -> JsonObject:
        where = ".".join(str(p) for p in error.path)
        return _error(_TYPES[error.kind], f"{where}: {error.message}" if where else error.message, request_id)

    def refusal_body(self, refusal: Refused, model: str, request_id: str) -> JsonObject:
        if refusal.limit_name == CONCURRENCY:
            message = (
                f"Number of concurrent connections to {model} has exceeded your rate limit of {refusal.limit}. "
                "Please try again once an earlier request has finished."
            )
        else:
            unit = _UNITS[Dim(refusal.limit_name)]
            limit = f"{refusal.limit:,} {unit} per minute (model: {model})"
            if refusal.too_large:
                message = (
                    f"This request's {refusal.requested:,} {unit} exceed your organization's rate limit of {limit}; "
                    "please reduce the prompt length or the maximum tokens requested."
                )
            else:
                message = (
                    f"This request would exceed your organization's rate limit of {limit}. You can see the "
                    "response headers for current usage. Please reduce the prompt length or the maximum tokens "
                    "requested, or try again later."
                )
        return _error("rate_limit_error", message, request_id)

    def limit_headers(self, levels: Mapping[Dim, Level], now_unix: float) -> dict[str, str]:
        headers = {}
        for dim, infix in _HEADER_INFIXES.items():
            level = levels.get(dim)
            if level is not None:
                headers.update(_level_headers(infix, level, now_unix))
        token_levels = [levels[dim] for dim in _TOKEN_DIMS if dim in levels]
        if token_levels:
            # Anthropic's tokens headers show the most restrictive token limit (fewest remaining), which
            # may be the combined tokens_per_minute when one is configured.
            headers.update(_level_headers("tokens", min(token_levels, key=lambda lv: lv.remaining), now_unix))
        return headers

    def answer_body(self, outcome: Outcome, text: str, request_id: str, now_unix: float) -> JsonObject:
        call = outcome.call
        return {
            "id": f"msg_{secrets.token_hex(12)}",
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "max_tokens" if outcome.hit_max_tokens else "end_turn",
            "stop_sequence": None,
            "usage": {
                # Anthropic's input_tokens leave out the prompt tokens read from the cache.
                "input_tokens": call.prompt_tokens - outcome.cached_tokens,
                "output_tokens": outcome.output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": outcome.cached_tokens,
            },
        }


def _level_headers(infix: str, level: Level, now_unix: float) -> dict[str, str]:
    return {
        f"anthropic-ratelimit-{infix}-limit": str(level.limit),
        f"anthropic-ratelimit-{infix}-remaining": str(level.remaining),
        f"anthropic-ratelimit-{infix}-reset": rfc3339_utc(now_unix + level.seconds_to_full),
    }


def _error(type_: str, message: str, request_id: str) -> JsonObject:
    return {"type": "error", "error": {"type": type_, "message": message}, "request_id": request_id}
