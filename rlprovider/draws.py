"""The seeded draws: each answer's latency and length come from one generator, so a run repeats
exactly for the same order of arrivals."""

from __future__ import annotations

import random

from .config import LatencyRange, OutputRange


class Draws:
    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def latency_s(self, bounds: LatencyRange) -> float:
        return self._random.uniform(bounds.min, bounds.max) / 1000

    def output_tokens(self, bounds: OutputRange, max_tokens: int) -> int:
        return min(max_tokens, self._random.randint(bounds.min, bounds.max))
