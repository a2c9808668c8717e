"""OpenAI's chat completions: the request as its API accepts it, the ChatCompletion answer, the
`x-ratelimit-*` headers and the error bodies, in OpenAI's formats."""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from . import tokens
from .calls import (
    ApiError,
    Call,
    ErrorKind,
    FieldPath,
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
from .timefmt import go_duration

ORGANIZATION = "org-local"
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_LIMITS_PAGE = "Visit https://platform.openai.com/account/rate-limits to learn more."
# Header suffix and the name OpenAI's messages give each limit.
_DIMS = {Dim.REQUESTS: ("requests", "requests per min (RPM)"), Dim.TOKENS: ("tokens", "tokens per min (TPM)")}
_CODES = {
    ErrorKind.INVALID_REQUEST: None,
    ErrorKind.AUTHENTICATION: "invalid_api_key",
    ErrorKind.NOT_FOUND: "model_not_found",
}


def param_name(path: FieldPath) -> str | None:
    """OpenAI's `param`: `messages[0].content`."""
    if not path:
        return None
    name = str(path[0])
    for part in path[1:]:
        name += f"[{part}]" if isinstance(part, int) else f".{part}"
    return name


class OpenAiApi:
    name: ApiName = "openai"
    request_id_header = "x-request-id"

    def api_key(self, headers: Mapping[str, str]) -> str | None:
        return bearer_token(headers)

    def model_of(self, body: JsonObject) -> str:
        return required_str(body, "model")

    def parse(self, body: JsonObject, model: str, default_max_tokens: int) -> Call:
        refuse_streaming(body)
        if body.get("n") not in (None, 1):
            raise ApiError(ErrorKind.INVALID_REQUEST, "only one choice (n = 1) is simulated", ("n",))
        texts = []
        for i, message in enumerate(message_list(body)):
            role = role_of(message, ("messages", i), ROLES)
            # An assistant turn that only called tools has no content.
            texts.append(text_of(message.get("content"), ("messages", i, "content"), allow_none=role == "assistant"))
        completion_cap = optional_positive_int(body, "max_completion_tokens")
        legacy_cap = optional_positive_int(body, "max_tokens")
        cap = completion_cap or legacy_cap or default_max_tokens
        return Call(model, tokens.prompt_tokens(texts), cap)

    def unknown_key(self) -> ApiError:
        return ApiError(
            ErrorKind.AUTHENTICATION,
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
        )

    def unknown_model(self, model: str) -> ApiError:
        return ApiError(ErrorKind.NOT_FOUND, f"The model `{model}` does not exist or you do not have access to it.")

    def demand(self, call: Call, cached_tokens: int) -> Amounts:
        # OpenAI counts cached prompt tokens toward TPM like any other.
        return {Dim.REQUESTS: 1, Dim.TOKENS: call.prompt_tokens + call.max_tokens}

    def usage(self, outcome: Outcome) -> Amounts:
        return {Dim.REQUESTS: 1, Dim.TOKENS: outcome.call.prompt_tokens + outcome.output_tokens}

    def error_body(self, error: ApiError, request_id: str) -> JsonObject:
        param = param_name(error.path)
        message = f"Invalid value for '{param}': {error.message}." if param else error.message
        return _error(message, "invalid_request_error", param, _CODES[error.kind])

    def refusal_body(self, refusal: Refused, model: str, request_id: str) -> JsonObject:
        where = f"{model} in organization {ORGANIZATION}"
        if refusal.limit_name == CONCURRENCY:
            message = (
                f"Too many concurrent requests for {where}: Limit {refusal.limit}, In flight {refusal.used}. "
                "Please try again once an earlier request has finished."
            )
            return _error(message, "requests", None, "rate_limit_exceeded")
        suffix, described = _DIMS[Dim(refusal.limit_name)]
        if refusal.too_large:
            message = (
                f"Request too large for {where} on {described}: Limit {refusal.limit}, Requested "
                f"{refusal.requested}. The input or output tokens must be reduced in order to run successfully. "
                f"{_LIMITS_PAGE}"
            )
        else:
            message = (
                f"Rate limit reached for {where} on {described}: Limit {refusal.limit}, Used {refusal.used}, "
                f"Requested {refusal.requested}. Please try again in {go_duration(refusal.wait_s)}. {_LIMITS_PAGE}"
            )
        return _error(message, suffix, None, "rate_limit_exceeded")

    def limit_headers(self, levels: Mapping[Dim, Level], now_unix: float) -> dict[str, str]:
        headers = {}
        for dim, (suffix, _) in _DIMS.items():
            level = levels.get(dim)
            if level is not None:
                headers[f"x-ratelimit-limit-{suffix}"] = str(level.limit)
                headers[f"x-ratelimit-remaining-{suffix}"] = str(level.remaining)
                headers[f"x-ratelimit-reset-{suffix}"] = go_duration(level.seconds_to_full)
        return headers

    def answer_body(self, outcome: Outcome, text: str, request_id: str, now_unix: float) -> JsonObject:
        call = outcome.call
        return {
            "id": f"chatcmpl-{secrets.token_hex(12)}",
            "object": "chat.completion",
            "created": int(now_unix),
            "model": call.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": "length" if outcome.hit_max_tokens else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": call.prompt_tokens,
                "completion_tokens": outcome.output_tokens,
                "total_tokens": call.prompt_tokens + outcome.output_tokens,
                "prompt_tokens_details": {"cached_tokens": outcome.cached_tokens, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": None,
        }


def _error(message: str, type_: str, param: str | None, code: str | None) -> JsonObject:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
