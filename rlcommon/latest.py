"""The newest value of a changing thing, shared by many readers that each take it at their own pace.

One writer publishes; any number of readers follow. A reader never queues values: when it comes
back for the next one it gets the newest it has not seen, whatever was published meanwhile (drop to
latest). Publishing costs one assignment and, only while readers wait, waking them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Generic, TypeVar

from .write_budget import WriteBudget

T = TypeVar("T")


class Latest(Generic[T]):
    """`seq` counts the values published; 0 means none yet. Once closed, readers end after the
    newest value: quietly when closed with no error, else by raising it."""

    __slots__ = ("_closed", "_error", "_next", "seq", "value")

    def __init__(self) -> None:
        self.seq = 0
        self.value: T | None = None
        self._closed = False
        self._error: BaseException | None = None
        # Resolved, then dropped, at the next publish or close; made only when a reader waits.
        self._next: asyncio.Future[None] | None = None

    def publish(self, value: T) -> None:
        self.value = value
        self.seq += 1
        self._wake()

    def close(self, error: BaseException | None = None) -> None:
        self._closed = True
        self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._next is not None:
            self._next.set_result(None)
            self._next = None

    async def newer(self, seen: int) -> int:
        """Returns the newest seq once it is past `seen`; raises StopAsyncIteration (closed with no
        error) or the error, once the value `seen` is the last there will be."""
        while self.seq == seen:
            if self._closed:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            if self._next is None:
                self._next = asyncio.get_running_loop().create_future()
            # Shielded: one reader leaving must not cancel the wake-up the others wait for.
            await asyncio.shield(self._next)
        return self.seq


async def follow(latest: Latest[T], interval_s: float, budget: WriteBudget) -> AsyncGenerator[T, None]:
    """The newest value at once (as soon as there is one), then the newest again after each
    publish, never two within `interval_s`: the caller sends each value before asking for the next,
    so a slow reader holds back only itself and then gets the newest value, never a backlog. Each
    value waits for its turn in `budget` first, and is read only then."""
    loop = asyncio.get_running_loop()
    seen = 0
    while True:
        try:
            await latest.newer(seen)
        except StopAsyncIteration:
            return
        await budget.turn()
        next_at = loop.time() + interval_s
        seen, value = latest.seq, latest.value
        assert value is not None
        yield value
        delay = next_at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
