"""Minute and UTC-day windows on Redis time."""

from __future__ import annotations

MINUTE_MS = 60_000
DAY_MS = 86_400_000


def minute_window(now_ms: int) -> int:
    return now_ms // MINUTE_MS


def day_window(now_ms: int) -> int:
    return now_ms // DAY_MS


def next_minute_boundary(now_ms: int) -> int:
    return (now_ms // MINUTE_MS + 1) * MINUTE_MS


def default_wait_ms(now_ms: int) -> int:
    """SPEC §6: with no max_wait_ms, wait until the next minute boundary plus 5 s."""
    return next_minute_boundary(now_ms) - now_ms + 5000
