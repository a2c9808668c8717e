"""Timers on Redis time that wake a model's waiters when what held them back ends: a provider's 429
pausing the model on every instance (SPEC §11), or a rolling model's buckets refilling (SPEC §12).
The ledger is the authority either way; these keep the instance from asking too early and from
waiting longer than it must, with no polling."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..capacity.state import ModelState
from .clock import RedisClock

# Redis time moves on a little past the end before the ledger grants again.
_END_SLACK_S = 0.01


class ModelTimers:
    """At most one timer a model, calling ended(model) at a Redis time."""

    def __init__(self, clock: RedisClock, ended: Callable[[ModelState], None]) -> None:
        self._clock = clock
        self._ended = ended
        # Per model: the Redis time the timer is armed for, and the timer.
        self._timers: dict[str, tuple[int, asyncio.TimerHandle]] = {}

    def armed(self, model: ModelState) -> int | None:
        entry = self._timers.get(model.name)
        return None if entry is None else entry[0]

    def arm(self, model: ModelState, at_ms: int) -> None:
        entry = self._timers.get(model.name)
        if entry is not None:
            if entry[0] == at_ms:
                return
            entry[1].cancel()
        at = self._clock.loop_time(at_ms) + _END_SLACK_S
        self._timers[model.name] = (at_ms, asyncio.get_running_loop().call_at(at, self._end, model))

    def _end(self, model: ModelState) -> None:
        del self._timers[model.name]
        self._ended(model)

    def close(self) -> None:
        for _, timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


class Pauses(ModelTimers):
    def holds(self, model: ModelState) -> bool:
        """Whether the model is paused now; if so, its waiters are woken when the pause ends."""
        until = self.paused_until(model)
        if until:
            self.arm(model, until)
        return bool(until)

    def paused_until(self, model: ModelState) -> int:
        """The pause's end (Redis ms) while it lasts, else 0."""
        until = model.snapshot.paused_until_ms
        return until if until > self._clock.now_ms() else 0


class Refills(ModelTimers):
    """A rolling model's waiters are woken when its buckets hold enough for the first of them."""

    def ensure(self, model: ModelState, first_fit: Callable[[ModelState], int | None]) -> None:
        """Arms the model's timer unless one is armed: under load, releases wake the waiters long
        before; the timer serves a quiet model."""
        if self.armed(model) is not None:
            return
        at = first_fit(model)
        # A time already passed would mean the refill is not what holds the waiters back.
        if at is not None and at > self._clock.now_ms():
            self.arm(model, at)
