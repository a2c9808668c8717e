"""What both APIs share: a parsed call, its outcome, the errors it can raise, and the interface each
API's module implements for the server."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from .config import ApiName
from .limits import Amounts, Dim, Level, Refused

FieldPath = tuple[str | int, ...]
JsonObject = dict[str, Any]


class ErrorKind(Enum):
    INVALID_REQUEST = 400
    AUTHENTICATION = 401
    NOT_FOUND = 404


class ApiError(Exception):
    """A call that cannot be served; `path` locates the offending field in the request body."""

    def __init__(self, kind: ErrorKind, message: str, path: FieldPath = ()) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.path = path


@dataclass(frozen=True)
class Call:
    model: str
    prompt_tokens: int
    # The cap on the answer's length: what the call is checked against on arrival.
    max_tokens: int


@dataclass(frozen=True)
class Outcome:
    call: Call
    # A part of the prompt, as both providers' caches serve a prefix of it.
    cached_tokens: int
    output_tokens: int

    @property
    def hit_max_tokens(self) -> bool:
        return self.output_tokens >= self.call.max_tokens


class Api(Protocol):
    name: ApiName
    request_id_header: str

    def api_key(self, headers: Mapping[str, str]) -> str | None: ...

    def model_of(self, body: JsonObject) -> str:
        """The model named in the body, before the rest is parsed, so that an unknown model is 404."""
        ...

    def parse(self, body: JsonObject, model: str, default_max_tokens: int) -> Call: ...

    def unknown_key(self) -> ApiError: ...

    def unknown_model(self, model: str) -> ApiError: ...

    def demand(self, call: Call, cached_tokens: int) -> Amounts:
        """What the call is checked against and charged on arrival, in every dimension."""
        ...

    def usage(self, outcome: Outcome) -> Amounts:
        """What the call really used, charged instead of the demand at its end."""
        ...

    def error_body(self, error: ApiError, request_id: str) -> JsonObject: ...

    def refusal_body(self, refusal: Refused, model: str, request_id: str) -> JsonObject: ...

    def limit_headers(self, levels: Mapping[Dim, Level], now_unix: float) -> dict[str, str]: ...

    def answer_body(self, outcome: Outcome, text: str, request_id: str, now_unix: float) -> JsonObject: ...


def bearer_token(headers: Mapping[str, str]) -> str | None:
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def require_object(body: object) -> JsonObject:
    if not isinstance(body, dict):
        raise ApiError(ErrorKind.INVALID_REQUEST, "the request body must be a JSON object")
    return body


def required_str(body: JsonObject, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ApiError(ErrorKind.INVALID_REQUEST, "a non-empty string is required", (name,))
    return value


def optional_positive_int(body: JsonObject, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    # bool is an int to Python but not to JSON's readers.
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ApiError(ErrorKind.INVALID_REQUEST, "expected an integer of at least 1", (name,))
    return value


def refuse_streaming(body: JsonObject) -> None:
    if body.get("stream") is True:
        raise ApiError(
            ErrorKind.INVALID_REQUEST,
            "streaming is not simulated by rlprovider; send stream false or leave it out",
            ("stream",),
        )


def message_list(body: JsonObject) -> list[JsonObject]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(ErrorKind.INVALID_REQUEST, "a non-empty array is required", ("messages",))
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ApiError(ErrorKind.INVALID_REQUEST, "expected an object", ("messages", i))
    return messages


def role_of(message: JsonObject, path: FieldPath, roles: tuple[str, ...]) -> str:
    role = message.get("role")
    if role not in roles:
        raise ApiError(
            ErrorKind.INVALID_REQUEST, f"role: expected one of {', '.join(roles)}, got {role!r}", (*path, "role")
        )
    return str(role)


def text_of(content: object, path: FieldPath, allow_none: bool) -> str:
    """A message's text: a string, or a list of text parts (`{"type": "text", "text": ...}`)."""
    if content is None and allow_none:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ApiError(ErrorKind.INVALID_REQUEST, "expected a string or an array of text parts", path)
    texts = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise ApiError(
                ErrorKind.INVALID_REQUEST,
                'only text parts ({"type": "text", "text": "..."}) are simulated',
                (*path, i),
            )
        texts.append(part["text"])
    return "".join(texts)
