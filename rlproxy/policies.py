"""Routing policies: which target gets the next Acquire.

Policies are pure: they see the targets only through `Candidate` and keep nothing but their own
counters, so they can be tested without a network. `pick` returns an index into the candidates,
or -1 when none is usable. `excluded` is a bit mask of indexes this call already failed on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

POLICY_NAMES: Final = ("round_robin", "weighted", "least_loaded")


class Candidate(Protocol):
    @property
    def serving(self) -> bool: ...

    @property
    def load(self) -> int: ...


class Policy(Protocol):
    def pick(self, candidates: Sequence[Candidate], excluded: int = 0) -> int: ...

    def unpick(self, index: int) -> None:
        """Takes back a pick whose call never reached the target."""


class RoundRobin:
    def __init__(self) -> None:
        self._next = 0

    def pick(self, candidates: Sequence[Candidate], excluded: int = 0) -> int:
        n = len(candidates)
        start = self._next
        for step in range(n):
            i = (start + step) % n
            if candidates[i].serving and not (excluded >> i) & 1:
                self._next = (i + 1) % n
                return i
        return -1

    def unpick(self, index: int) -> None:
        return None


class LeastLoaded:
    """Fewest open leases; equal loads take turns so that an idle fleet is still spread."""

    def __init__(self) -> None:
        self._next = 0

    def pick(self, candidates: Sequence[Candidate], excluded: int = 0) -> int:
        n = len(candidates)
        start = self._next
        best = -1
        best_load = 0
        for step in range(n):
            i = (start + step) % n
            candidate = candidates[i]
            if not candidate.serving or (excluded >> i) & 1:
                continue
            load = candidate.load
            if best < 0 or load < best_load:
                best, best_load = i, load
        if best >= 0:
            self._next = (best + 1) % n
        return best

    def unpick(self, index: int) -> None:
        return None


class Weighted:
    """Each pick goes to the usable target furthest below its share of the picks.

    With n picks so far among the usable targets and W their summed weight, target i's share after
    this pick is (n + 1) * w_i / W; the target with the largest share minus count wins, ties to the
    lowest index. Unlike "smallest count / weight", this keeps every target within one pick of its
    exact share at every point, for any number of targets.
    """

    def __init__(self, weights: Sequence[int]) -> None:
        if not weights or any(w <= 0 for w in weights):
            raise ValueError("weights must be positive integers")
        self._weights = tuple(weights)
        self._counts = [0] * len(weights)
        self._was_serving = [False] * len(weights)

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(self._counts)

    def pick(self, candidates: Sequence[Candidate], excluded: int = 0) -> int:
        if len(candidates) != len(self._weights):
            raise ValueError(f"{len(candidates)} targets for {len(self._weights)} weights")
        weights, counts, was_serving = self._weights, self._counts, self._was_serving
        rejoined = 0
        for i, candidate in enumerate(candidates):
            serving = candidate.serving
            if serving and not was_serving[i]:
                rejoined |= 1 << i
            was_serving[i] = serving
        if rejoined:
            self._catch_up(candidates, rejoined)
        total_weight = 0
        total_count = 0
        for i, candidate in enumerate(candidates):
            if candidate.serving and not (excluded >> i) & 1:
                total_weight += weights[i]
                total_count += counts[i]
        best = -1
        best_deficit = 0
        for i, candidate in enumerate(candidates):
            if not candidate.serving or (excluded >> i) & 1:
                continue
            deficit = (total_count + 1) * weights[i] - total_weight * counts[i]
            if best < 0 or deficit > best_deficit:
                best, best_deficit = i, deficit
        if best >= 0:
            counts[best] += 1
        return best

    def unpick(self, index: int) -> None:
        self._counts[index] -= 1

    def _catch_up(self, candidates: Sequence[Candidate], rejoined: int) -> None:
        # A target coming back after an outage would otherwise take every pick until its count
        # caught up with the others; start it at its share of what they have done meanwhile.
        weights, counts = self._weights, self._counts
        others_weight = 0
        others_count = 0
        for i, candidate in enumerate(candidates):
            if candidate.serving and not (rejoined >> i) & 1:
                others_weight += weights[i]
                others_count += counts[i]
        if not others_weight:
            return
        for i in range(len(candidates)):
            if (rejoined >> i) & 1:
                counts[i] = max(counts[i], others_count * weights[i] // others_weight)


def make_policy(name: str, targets: int, weights: Sequence[int] | None) -> Policy:
    if weights is not None and len(weights) != targets:
        raise ValueError(f"{len(weights)} weights for {targets} targets")
    if name == "round_robin":
        return RoundRobin()
    if name == "least_loaded":
        return LeastLoaded()
    if name == "weighted":
        return Weighted(weights if weights is not None else [1] * targets)
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")
