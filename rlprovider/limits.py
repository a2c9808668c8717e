"""The limits of one (key, model): its buckets and its concurrency. A request is checked on arrival
against what it may use at most and, when every bucket holds enough, charged that on all of them
at once; at its end it is charged what it really used instead."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from .buckets import Bucket
from .config import ModelConfig

Clock = Callable[[], float]


class Dim(StrEnum):
    """A bucketed dimension, named as its limit is in the configuration."""

    REQUESTS = "requests_per_minute"
    TOKENS = "tokens_per_minute"
    INPUT = "input_tokens_per_minute"
    OUTPUT = "output_tokens_per_minute"


CONCURRENCY = "max_concurrent_requests"

Amounts = Mapping[Dim, int]


@dataclass(frozen=True)
class Level:
    """A bucket as the headers show it."""

    limit: int
    remaining: int
    seconds_to_full: float


@dataclass(frozen=True)
class Admitted:
    levels: Mapping[Dim, Level]


@dataclass(frozen=True)
class Refused:
    """`limit_name` is the Dim or CONCURRENCY that refused; with several buckets short, the one
    that takes longest to hold what was asked. `wait_s` is that time; for a request larger than
    the bucket's capacity (`too_large`), which no wait helps, the time until it is full."""

    limit_name: str
    limit: int
    used: int
    requested: int
    wait_s: float
    too_large: bool
    levels: Mapping[Dim, Level]


class Limiter:
    def __init__(self, config: ModelConfig, clock: Clock) -> None:
        self._clock = clock
        now = clock()
        self._buckets = {dim: Bucket(limit, now) for dim in Dim if (limit := getattr(config, dim.value)) is not None}
        self._max_concurrent = config.max_concurrent_requests
        self.in_flight = 0
        self.peak_in_flight = 0

    def admit(self, demand: Amounts) -> Admitted | Refused:
        now = self._clock()
        if self._max_concurrent is not None and self.in_flight >= self._max_concurrent:
            return Refused(CONCURRENCY, self._max_concurrent, self.in_flight, 1, 0.0, False, self._levels(now))
        short = [
            (bucket.seconds_until(demand[dim], now), dim)
            for dim, bucket in self._buckets.items()
            if not bucket.has(demand[dim], now)
        ]
        if short:
            wait, dim = max(short)
            bucket = self._buckets[dim]
            too_large = math.isinf(wait)
            return Refused(
                limit_name=dim.value,
                limit=bucket.limit,
                used=bucket.limit - bucket.remaining(now),
                requested=demand[dim],
                wait_s=bucket.seconds_until_full(now) if too_large else wait,
                too_large=too_large,
                levels=self._levels(now),
            )
        for dim, bucket in self._buckets.items():
            bucket.take(demand[dim], now)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        return Admitted(self._levels(now))

    def settle(self, demand: Amounts, usage: Amounts) -> None:
        """Ends an admitted request: `usage` replaces the `demand` it was admitted with."""
        now = self._clock()
        for dim, bucket in self._buckets.items():
            bucket.settle(demand[dim], usage[dim], now)
        self.in_flight -= 1

    def _levels(self, now: float) -> dict[Dim, Level]:
        return {
            dim: Level(bucket.limit, bucket.remaining(now), bucket.seconds_until_full(now))
            for dim, bucket in self._buckets.items()
        }
