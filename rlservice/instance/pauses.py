"""A provider's 429 pauses a model on every instance (SPEC §11). The ledger refuses grants while
the pause lasts; this keeps the instance from asking, and wakes the model's waiters when it ends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..capacity.state import ModelState
from .clock import RedisClock

# Redis time moves on a little past the end before the ledger grants again.
_END_SLACK_S = 0.01


class Pauses:
    def __init__(self, clock: RedisClock, ended: Callable[[ModelState], None]) -> None:
        self._clock = clock
        self._ended = ended
        # One timer a paused model, at the end of the pause it was armed for.
        self._timers: dict[str, tuple[int, asyncio.TimerHandle]] = {}

    def holds(self, model: ModelState) -> bool:
        """Whether the model is paused now; if so, its waiters are woken when the pause ends."""
        until = model.snapshot.paused_until_ms
        if until == 0 or until <= self._clock.now_ms():
            return False
        armed = self._timers.get(model.name)
        if armed is None or armed[0] != until:
            if armed is not None:
                armed[1].cancel()
            at = self._clock.loop_time(until) + _END_SLACK_S
            self._timers[model.name] = (until, asyncio.get_running_loop().call_at(at, self._end, model))
        return True

    def paused_until(self, model: ModelState) -> int:
        """The pause's end (Redis ms) while it lasts, else 0."""
        until = model.snapshot.paused_until_ms
        return until if until > self._clock.now_ms() else 0

    def _end(self, model: ModelState) -> None:
        del self._timers[model.name]
        self._ended(model)

    def close(self) -> None:
        for _, timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
