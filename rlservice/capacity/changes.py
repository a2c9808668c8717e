"""Tells watchers that an instance's allocation may have changed, without ever blocking the notifier."""

from __future__ import annotations

import asyncio


class ChangeSignal:
    """A version number that moves on every change; watchers wait for it to pass what they saw.

    notify() is on the Acquire and Release paths: with nobody watching it costs one increment.
    """

    __slots__ = ("_waiters", "version")

    def __init__(self) -> None:
        self.version = 0
        self._waiters: list[asyncio.Future[None]] = []

    def notify(self) -> None:
        self.version += 1
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for future in waiters:
                if not future.done():
                    future.set_result(None)

    async def wait(self, seen: int) -> int:
        """Returns the current version once it differs from seen."""
        while self.version == seen:
            future = asyncio.get_running_loop().create_future()
            self._waiters.append(future)
            try:
                await future
            finally:
                if future in self._waiters:
                    self._waiters.remove(future)
        return self.version
