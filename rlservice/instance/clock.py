"""Redis time on the event loop's clock: windows and boundaries follow Redis, not the host."""

from __future__ import annotations

import asyncio


class RedisClock:
    def __init__(self) -> None:
        self._offset_ms = 0.0

    def sync(self, redis_now_ms: int) -> None:
        self._offset_ms = redis_now_ms - asyncio.get_running_loop().time() * 1000

    def now_ms(self) -> int:
        return int(asyncio.get_running_loop().time() * 1000 + self._offset_ms)

    def loop_time(self, redis_ms: int) -> float:
        """The event loop's time at a Redis time."""
        return (redis_ms - self._offset_ms) / 1000
