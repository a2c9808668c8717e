"""Rolling buckets (SPEC §12), as lib.lua keeps them: each limited dimension refills continuously at
limit / period up to the limit. A snapshot of a rolling model carries the bucket as settled usage,
limit - level - open, so that the pools and checks are those of fixed windows; here the level is
moved on to a later time, and the time is found when the buckets will have refilled enough."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from ..types import DIMS, ModelLimits, Snapshot
from .windows import DAY_MS, MINUTE_MS

# Refill periods in RATE_DIMS order: per-minute limits refill in a minute, per-day ones in a day.
PERIODS_MS = tuple(DAY_MS if d.per_day else MINUTE_MS for d in DIMS)
# The dimensions an outside consumer's estimated rate slows (Snapshot.outside, in its order): the
# minute's tokens and requests.
OUTSIDE_DIMS = (0, 1)


def _refills(limits: ModelLimits, snap: Snapshot) -> list[float | None]:
    """What each limited bucket refills a period: its limit, less the outside rate of a minute's
    tokens and requests, which the ledger holds within half the limit (feedback.lua; the state
    rounds it up); None where the dimension is not limited."""
    rates: list[float | None] = list(limits.rates)
    for dim, outside in zip(OUTSIDE_DIMS, snap.outside, strict=True):
        limit = rates[dim]
        if limit is not None and outside:
            rates[dim] = max(limit - outside, limit / 2)
    return rates


def refilled(limits: ModelLimits, snap: Snapshot, now_ms: int) -> Snapshot:
    """The snapshot as its buckets will be at now_ms, nothing else changing: each level grows by
    its refill x elapsed / period, up to limit - open (lib.lua's refill()), and settled falls by as much (rounded up,
    as the ledger reports it: the whole tokens the bucket holds)."""
    elapsed = now_ms - snap.now_ms
    if elapsed <= 0:
        return snap
    settled = list(snap.settled)
    for i, (limit, refill) in enumerate(zip(limits.rates, _refills(limits, snap), strict=True)):
        if limit is not None and refill is not None:
            level = limit - settled[i] - snap.open[i]
            grown = min(limit - snap.open[i], level + refill * elapsed / PERIODS_MS[i])
            settled[i] = math.ceil(limit - grown - snap.open[i])
    return replace(snap, now_ms=now_ms, settled=tuple(settled))


def full_in_ms(limits: ModelLimits, snap: Snapshot) -> int:
    """How long until every bucket is full (level + open = limit, settled 0), from the snapshot's
    time."""
    longest = 0
    for i, refill in enumerate(_refills(limits, snap)):
        if refill is not None and snap.settled[i] > 0:
            longest = max(longest, int(-(-snap.settled[i] * PERIODS_MS[i] // refill)))
    return longest


def first_fit_ms(limits: ModelLimits, snap: Snapshot, fits: Callable[[Snapshot], bool]) -> int | None:
    """The earliest Redis time at which fits() holds as the buckets refill, to the millisecond; None
    when it does not hold even with full buckets (something else holds the job back). fits() must
    only become true as the buckets fill."""
    low, high = snap.now_ms, snap.now_ms + full_in_ms(limits, snap)
    if not fits(refilled(limits, snap, high)):
        return None
    while low < high:
        mid = (low + high) // 2
        if fits(refilled(limits, snap, mid)):
            high = mid
        else:
            low = mid + 1
    return high
