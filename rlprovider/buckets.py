"""A continuously replenishing token bucket, as OpenAI and Anthropic describe their limits: capacity
is the per-minute limit, refilled at limit/60 per second up to that capacity, never reset at fixed
times. Pure arithmetic on times the caller passes (monotonic seconds)."""

from __future__ import annotations

import math

# Refill adds float fractions, so a level the hand count makes 5 can read 4.9999999998; comparisons
# and roundings allow this much so that such a level still counts as 5.
EPSILON = 1e-6


class Bucket:
    def __init__(self, limit: int, now: float) -> None:
        self.limit = limit
        self._level = float(limit)
        self._at = now

    @property
    def rate(self) -> float:
        """Units a second."""
        return self.limit / 60.0

    def level(self, now: float) -> float:
        """May be below 0 when a settle charged more than was taken on arrival."""
        return min(float(self.limit), self._level + max(0.0, now - self._at) * self.rate)

    def remaining(self, now: float) -> int:
        return max(0, math.floor(self.level(now) + EPSILON))

    def has(self, amount: int, now: float) -> bool:
        return self.level(now) + EPSILON >= amount

    def take(self, amount: int, now: float) -> None:
        """Unconditional: whoever takes has checked `has` on every bucket involved first."""
        self._advance(now)
        self._level -= amount

    def settle(self, taken: int, used: int, now: float) -> None:
        """Charges the actual use instead of what was taken on arrival: the difference comes back,
        never above capacity (or, when more was used than taken, is charged on top)."""
        self._advance(now)
        self._level = min(float(self.limit), self._level + taken - used)

    def seconds_until(self, amount: int, now: float) -> float:
        """How long until the bucket holds `amount`: 0 if it does, infinite if it never can."""
        if amount > self.limit:
            return math.inf
        missing = amount - self.level(now)
        return 0.0 if missing <= EPSILON else missing / self.rate

    def seconds_until_full(self, now: float) -> float:
        missing = self.limit - self.level(now)
        return 0.0 if missing <= EPSILON else missing / self.rate

    def _advance(self, now: float) -> None:
        self._level = self.level(now)
        self._at = max(self._at, now)
