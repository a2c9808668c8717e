"""The live allocation view: follows a ChangeSignal and sends the latest state, coalesced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from .capacity.changes import ChangeSignal
from .errors import InvalidArgument

DEFAULT_INTERVAL_MS = 200
MIN_INTERVAL_MS = 50
MAX_INTERVAL_MS = 60_000


def interval_s(min_interval_ms: int) -> float:
    """The pause between two messages a watcher asked for; 0 means the default."""
    if min_interval_ms == 0:
        return DEFAULT_INTERVAL_MS / 1000
    if not MIN_INTERVAL_MS <= min_interval_ms <= MAX_INTERVAL_MS:
        raise InvalidArgument(
            f"min_interval_ms must be 0 (the default, {DEFAULT_INTERVAL_MS}) or between "
            f"{MIN_INTERVAL_MS} and {MAX_INTERVAL_MS}, got {min_interval_ms}"
        )
    return min_interval_ms / 1000


async def ticks(changes: ChangeSignal, interval: float) -> AsyncGenerator[None, None]:
    """Yields at once, then after every change, never twice within `interval` seconds.

    The caller builds its message from the current state at each tick and sends it before asking for
    the next: a reader slower than the changes holds back this loop alone and then gets the latest
    state, never a backlog. The notifier only moves the signal's version.
    """
    loop = asyncio.get_running_loop()
    while True:
        seen = changes.version
        next_at = loop.time() + interval
        yield
        await changes.wait(seen)
        delay = next_at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
