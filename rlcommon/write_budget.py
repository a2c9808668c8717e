"""A ceiling on how many stream messages a server writes a second, across all its streams.

A write costs the event loop tens of microseconds, on the thread that also answers Acquire and
Release, and streams that each follow a busy instance at their own interval add up: a thousand at
50 ms would be 20 000 writes a second, more than the loop has. Past the ceiling, writers take turns
in arrival order, so every stream keeps moving, each at a slower pace, and what each then writes is
the newest message (rlcommon.latest.follow asks for its turn before it reads the value).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final

# Writers that wait are woken in batches at most this often, not one timer per write.
TICK_S: Final = 0.005
# The most writes that go at once after a quiet spell: 10 ms worth of the rate.
BURST_S: Final = 0.01


class WriteBudget:
    """A token bucket of `per_second` writes whose waiters are served first come, first served."""

    __slots__ = ("_burst", "_queue", "_rate", "_stamp", "_timer", "_tokens")

    def __init__(self, per_second: float) -> None:
        if per_second <= 0:
            raise ValueError("a write budget needs a positive rate")
        self._rate = per_second
        self._burst = max(1.0, per_second * BURST_S)
        self._tokens = self._burst
        self._stamp: float | None = None
        self._queue: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> int:
        return sum(1 for f in self._queue if not f.done())

    def _refill(self, now: float) -> None:
        if self._stamp is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    async def turn(self) -> None:
        """Returns when the caller may write one message."""
        loop = asyncio.get_running_loop()
        self._refill(loop.time())
        if not self._queue and self._tokens >= 1:
            self._tokens -= 1
            return
        future = loop.create_future()
        self._queue.append(future)
        self._arm(loop)
        # A writer that leaves while waiting cancels its future; the dispatch skips it.
        await future

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None:
            wait = max(TICK_S, (1 - self._tokens) / self._rate)
            self._timer = loop.call_later(wait, self._dispatch, loop)

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._refill(loop.time())
        queue = self._queue
        while queue and self._tokens >= 1:
            future = queue.popleft()
            if not future.done():
                future.set_result(None)
                self._tokens -= 1
        while queue and queue[0].done():
            queue.popleft()
        if queue:
            self._arm(loop)
