"""Job-type shares of an instance's pool (SPEC §6): ratios, local rebalancing and memory slots."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ..config import RatioAdjustment
from ..types import Amounts, Estimate
from .pools import Pool

# floor() of a product like 100 * 0.29 must give 29, not 28.
_EPSILON = 1e-9


def scaled(base: int, ratio: float) -> int:
    return max(0, math.floor(base * ratio + _EPSILON))


def memory_slots(capacity_kb: int | None, ratio: float, memory_kb: int | None) -> int | None:
    """Local memory slots of a job type; None when memory does not bound it."""
    if capacity_kb is None or memory_kb is None:
        return None
    return scaled(capacity_kb, ratio) // memory_kb


def allocated_slots(pool: Pool, ratio: float, min_capacity: int, mem_slots: int | None) -> int:
    slots = max(min_capacity, scaled(pool.capacity_slots, ratio))
    return slots if mem_slots is None else min(slots, mem_slots)


@dataclass(frozen=True, slots=True)
class TypeUse:
    """What a job type holds locally on one model: open estimates per rate dimension, the jobs its
    slots count (those of the current window) and its jobs in flight on every model (memory)."""

    open: Amounts
    jobs: int
    in_flight_all_models: int


def may_take(
    pool: Pool,
    ratio: float,
    use: TypeUse,
    estimate: Estimate,
    min_capacity: int,
    mem_slots: int | None,
) -> bool:
    """Whether the job type may start one more job on the model: the instance has room for it (the
    ledger's checks, mirrored) and the type stays within its ratio of what the instance may hold.

    A type holding fewer than min_capacity jobs skips its per-dimension share, so that every type
    keeps a foothold however small its ratio.
    """
    if mem_slots is not None and use.in_flight_all_models >= mem_slots:
        return False
    if use.jobs >= allocated_slots(pool, ratio, min_capacity, mem_slots):
        return False
    need = estimate.per_dim()
    for i, room in enumerate(pool.room):
        if room is not None and need[i] > room:
            return False
    if pool.concurrent_room is not None and pool.concurrent_room < 1:
        return False
    if use.jobs < min_capacity:
        return True
    for i, cap in enumerate(pool.capacity):
        if cap is not None and use.open[i] + need[i] > scaled(cap, ratio):
            return False
    return True


def load_of(in_flight: int, waiting: int, allocated: int) -> float:
    demand = in_flight + waiting
    if allocated <= 0:
        return math.inf if demand else 0.0
    return demand / allocated


def rebalance(
    ratios: Mapping[str, float],
    flexible: Mapping[str, bool],
    loads: Mapping[str, float],
    cfg: RatioAdjustment,
) -> dict[str, float]:
    """One rebalancing cycle. Flexible types under the low threshold donate up to max_adjustment of
    their ratio (never below min_ratio); flexible types over the high threshold receive in
    proportion to their load; fixed types never move; the flexible ratios are then normalised so
    that all ratios sum to 1."""
    new = dict(ratios)
    donors = [n for n in new if flexible[n] and loads[n] < cfg.low_load_threshold]
    receivers = [n for n in new if flexible[n] and loads[n] > cfg.high_load_threshold]
    if not donors or not receivers:
        return new
    given = 0.0
    for name in donors:
        gift = max(0.0, min(new[name] * cfg.max_adjustment, new[name] - cfg.min_ratio))
        new[name] -= gift
        given += gift
    if given <= 0:
        return new
    finite = {n: min(loads[n], 1e6) for n in receivers}
    weight = math.fsum(finite.values())
    for name in receivers:
        new[name] += given * finite[name] / weight
    return normalise(new, flexible)


def normalise(ratios: Mapping[str, float], flexible: Mapping[str, bool]) -> dict[str, float]:
    """Scales the flexible ratios so that all ratios sum to 1; fixed ones stay as they are."""
    fixed_sum = math.fsum(r for n, r in ratios.items() if not flexible[n])
    flex_sum = math.fsum(r for n, r in ratios.items() if flexible[n])
    if flex_sum <= 0:
        return dict(ratios)
    factor = (1.0 - fixed_sum) / flex_sum
    return {n: (r * factor if flexible[n] else r) for n, r in ratios.items()}
