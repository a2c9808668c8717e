"""FIFO wait queues, one per model and job type; woken by events, never by polling."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

R = TypeVar("R")


class Waiter(Generic[R]):
    """A queued Acquire. When woken it is handed a local reservation made on its behalf."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[R] = asyncio.get_running_loop().create_future()

    @property
    def woken(self) -> bool:
        return self.future.done()

    def rearm(self) -> None:
        self.future = asyncio.get_running_loop().create_future()


class WaitQueue(Generic[R]):
    def __init__(self) -> None:
        self._waiters: deque[Waiter[R]] = deque()

    def __len__(self) -> int:
        return len(self._waiters)

    def join(self) -> Waiter[R]:
        waiter: Waiter[R] = Waiter()
        self._waiters.append(waiter)
        return waiter

    def leave(self, waiter: Waiter[R]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)

    def waiting(self) -> bool:
        """Whether some waiter has not been handed a reservation yet."""
        return any(not w.woken for w in self._waiters)

    def wake_in_order(self, reserve: Callable[[], R | None]) -> None:
        """Hands reservations to waiters in arrival order while they fit; stops at the first that
        does not, so that no later waiter overtakes it."""
        for waiter in self._waiters:
            if waiter.woken:
                continue
            reservation = reserve()
            if reservation is None:
                return
            waiter.future.set_result(reservation)
