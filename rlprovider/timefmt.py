"""How the providers write times in their headers and messages."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from .buckets import EPSILON


def go_duration(seconds: float) -> str:
    """A duration as Go's time.Duration prints it, which is what OpenAI sends, to the millisecond
    rounded up (so that a caller waiting that long finds the capacity there): `0s`, `12ms`, `1s`,
    `1.5s`, `1m30.5s`, `6m0s`, `1h0m0s`."""
    ms = max(0, math.ceil(seconds * 1000 - EPSILON))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, fraction = divmod(rest, 1000)
    secs = f"{whole}.{fraction:03d}".rstrip("0") if fraction else str(whole)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def rfc3339_utc(unix_seconds: float) -> str:
    """A wall-clock instant as Anthropic's reset headers give it, to the second rounded up."""
    whole = math.ceil(unix_seconds - EPSILON)
    return datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def retry_after(seconds: float) -> int:
    """The `retry-after` header: whole seconds rounded up, at least 1, since 0 would invite an
    immediate retry that is refused again."""
    return max(1, math.ceil(seconds - EPSILON))
