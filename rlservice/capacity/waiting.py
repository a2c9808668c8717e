"""FIFO wait queues, one per model and job type; woken by events, never by polling."""

from __future__ import annotations

import asyncio
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


class WaitPlaces:
    """The places all of an instance's queues share (`max_waiters`). The queues count them as waiters
    join and leave, so a waiter that leaves in any way (granted, timed out, cancelled, failed) frees
    its place."""

    __slots__ = ("limit", "taken")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0

    @property
    def full(self) -> bool:
        return self.taken >= self.limit


class QueueFull(Exception):
    """Every place is taken: the Acquire must not queue."""


class WaitQueue(Generic[R]):
    def __init__(self, places: WaitPlaces) -> None:
        self._waiters: deque[Waiter[R]] = deque()
        self._places = places

    def __len__(self) -> int:
        return len(self._waiters)

    def join(self) -> Waiter[R]:
        """Raises QueueFull when the instance's places are all taken."""
        if self._places.full:
            raise QueueFull
        waiter: Waiter[R] = Waiter()
        self._waiters.append(waiter)
        self._places.taken += 1
        return waiter

    def leave(self, waiter: Waiter[R]) -> None:
        """Idempotent: only a waiter still queued gives its place back."""
        try:
            self._waiters.remove(waiter)
        except ValueError:
            return
        self._places.taken -= 1

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
