"""Reading the providers' rate-limit headers: pure parsing, no SDK needed.

Every reader takes the response's headers (any ``Mapping[str, str]``; names are matched without
regard to case) and returns None for a header that is absent. A malformed value is ignored with a
``logging`` warning naming the header, never an exception: these run in the caller's request path.

- ``retry-after-ms`` (OpenAI: milliseconds) and ``retry-after`` (seconds, or an HTTP-date);
- ``x-ratelimit-reset-*`` (OpenAI: durations such as ``12ms``, ``1s``, ``1m30.5s``, ``6m0s``);
- ``anthropic-ratelimit-*-reset`` (Anthropic: RFC 3339 times);
- ``*-remaining`` counts (both: non-negative integers).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import NamedTuple, TypeVar

from rlclient.types import ProviderFeedback

log = logging.getLogger("rlclient.providers")

T = TypeVar("T")
Headers = Mapping[str, str]

# The largest value a ProviderFeedback field (int64) holds.
MAX_INT64 = 2**63 - 1
_UNIT_MS = {"h": 3_600_000.0, "m": 60_000.0, "s": 1_000.0, "ms": 1.0, "us": 1e-3, "µs": 1e-3, "ns": 1e-6}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ns|us|µs|ms|h|m|s)")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+")
_COUNT = re.compile(r"\d+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?|\.\d+")


# ----- values --------------------------------------------------------------------------------------


def _to_ms(ms: float) -> int:
    """Whole milliseconds, rounded up, for a finite non-negative amount; ValueError otherwise."""
    if not math.isfinite(ms) or ms < 0 or ms > MAX_INT64:
        raise ValueError(f"{ms} ms is out of range")
    return math.ceil(ms)


def parse_count(text: str) -> int:
    """A remaining count: a non-negative integer that fits int64."""
    if not _COUNT.fullmatch(text):
        raise ValueError(f"not a count: {text!r}")
    value = int(text)
    if value > MAX_INT64:
        raise ValueError(f"count out of range: {text!r}")
    return value


def parse_milliseconds(text: str) -> int:
    """OpenAI's ``retry-after-ms``: a non-negative number of milliseconds (fractions round up)."""
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"not a number of milliseconds: {text!r}")
    return _to_ms(float(text))


def parse_retry_after(text: str, now: float) -> int:
    """``retry-after`` in milliseconds: delay-seconds (fractions accepted) or an HTTP-date, which
    counts from ``now`` (epoch seconds); a date already past is 0."""
    if _NUMBER.fullmatch(text):
        return _to_ms(float(text) * 1000)
    when = parsedate_to_datetime(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return _to_ms(max(0.0, when.timestamp() - now) * 1000)


def parse_duration(text: str) -> int:
    """An OpenAI reset duration in milliseconds, rounded up: ``12ms`` → 12, ``1s`` → 1000,
    ``1m30.5s`` → 90500, ``6m0s`` → 360000 (units h, m, s, ms, us/µs, ns; a bare ``0`` is 0)."""
    if text == "0":
        return 0
    if not _DURATION.fullmatch(text):
        raise ValueError(f"not a duration: {text!r}")
    return _to_ms(sum(float(number) * _UNIT_MS[unit] for number, unit in _DURATION_PART.findall(text)))


def parse_rfc3339(text: str, now: float) -> int:
    """An Anthropic reset time (RFC 3339, e.g. ``2026-01-01T12:00:30Z``) as milliseconds from
    ``now`` (epoch seconds); a time already past is 0. A time without an offset is taken as UTC."""
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return _to_ms(max(0.0, when.timestamp() - now) * 1000)


# ----- headers -------------------------------------------------------------------------------------


def header_value(headers: Headers, name: str) -> str | None:
    """The header's value, whatever the case of its name in ``headers``; None when absent."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def read_header(headers: Headers, name: str, parse: Callable[[str], T]) -> T | None:
    """``parse`` applied to the header's value; None when absent, or when malformed (with a warning)."""
    raw = header_value(headers, name)
    if raw is None:
        return None
    try:
        return parse(raw.strip())
    except (ValueError, TypeError, OverflowError, AttributeError):
        log.warning("ignoring the %s header: malformed value %r", name, raw)
        return None


def retry_after_ms(headers: Headers, now: float | None = None) -> int | None:
    """How long the provider asks to wait, in milliseconds: OpenAI's ``retry-after-ms`` when it is
    there and well-formed, else ``retry-after``; None when neither says."""
    now = time.time() if now is None else now
    exact = read_header(headers, "retry-after-ms", parse_milliseconds)
    if exact is not None:
        return exact
    return read_header(headers, "retry-after", lambda text: parse_retry_after(text, now))


class Dimension(NamedTuple):
    """One limited dimension of a provider: the header of what is left and the one of its reset."""

    remaining: str
    reset: str


@dataclass(frozen=True, slots=True)
class RateLimitHeaders:
    """A provider's rate-limit headers, by the ProviderFeedback field each one feeds, and how its
    reset headers are written (text, now in epoch seconds → milliseconds from now)."""

    parse_reset: Callable[[str, float], int]
    tokens: Dimension | None = None
    requests: Dimension | None = None
    input_tokens: Dimension | None = None
    output_tokens: Dimension | None = None

    def feedback(self, headers: Headers, *, refused: bool = False, now: float | None = None) -> ProviderFeedback:
        """The provider's feedback in ``headers``: what is left, and how long to hold off.

        ``refused`` (an HTTP 429) without a usable ``retry-after`` falls back to the latest reset
        among the dimensions the headers show exhausted (0 when none is: the service then pauses
        for its default).
        """
        now = time.time() if now is None else now
        dimensions = (self.tokens, self.requests, self.input_tokens, self.output_tokens)
        left = [read_header(headers, d.remaining, parse_count) if d is not None else None for d in dimensions]
        retry = retry_after_ms(headers, now)
        if retry is None and refused:
            resets = (
                read_header(headers, d.reset, lambda text: self.parse_reset(text, now))
                for d, n in zip(dimensions, left, strict=True)
                if d is not None and n == 0
            )
            retry = max((r for r in resets if r is not None), default=None)
        return ProviderFeedback(
            retry_after_ms=retry or 0,
            remaining_tokens=left[0],
            remaining_requests=left[1],
            remaining_input_tokens=left[2],
            remaining_output_tokens=left[3],
        )


OPENAI_HEADERS = RateLimitHeaders(
    parse_reset=lambda text, _now: parse_duration(text),
    tokens=Dimension("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
    requests=Dimension("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
)

ANTHROPIC_HEADERS = RateLimitHeaders(
    parse_reset=parse_rfc3339,
    tokens=Dimension("anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset"),
    requests=Dimension("anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-reset"),
    input_tokens=Dimension("anthropic-ratelimit-input-tokens-remaining", "anthropic-ratelimit-input-tokens-reset"),
    output_tokens=Dimension("anthropic-ratelimit-output-tokens-remaining", "anthropic-ratelimit-output-tokens-reset"),
)
