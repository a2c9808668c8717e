"""What one instance may take on a model (SPEC §5), mirrored from lib.lua: the reported pool, the
two admission checks and lending."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from ..types import DIMS, NO_AMOUNTS, Amounts, Estimate, ModelLimits, Rates, Snapshot

Dims = Rates
# Per kind (KINDS): the average estimate of a job over all job types.
Averages = Sequence[Fraction | float]

# Slots reported when no configured dimension bounds them (every estimate is 0).
UNBOUNDED_SLOTS = 1_000_000


@dataclass(frozen=True, slots=True)
class Pending:
    """Local attempts sent to Redis whose replies have not arrived yet: their estimates in RATE_DIMS
    order, and how many."""

    amounts: Amounts = NO_AMOUNTS
    count: int = 0

    def add(self, estimate: Estimate, count: int) -> Pending:
        """count attempts of this estimate more (fewer when negative)."""
        dims = estimate.per_dim()
        return Pending(tuple(a + count * e for a, e in zip(self.amounts, dims, strict=True)), self.count + count)


NO_PENDING = Pending()


@dataclass(frozen=True, slots=True)
class Pool:
    """One instance's view of a model; None = the dimension is not limited.

    rates, max_concurrent, total_slots: the reported pool, floor(max(0, limit - settled) / N) and
        floor(max_concurrent / N) (SPEC §5); it moves with settled usage and N only.
    capacity, capacity_slots, concurrent_capacity: what the instance may hold in the window, which
        its job types divide by their ratios: the pool, or while it borrows (lending on, its own
        waiters on record and no other instance waiting) what is left globally besides the others'
        open leases.
    room, concurrent_room: what it may still take now, both checks applied, attempts on their way
        to Redis included.
    """

    rates: Dims
    max_concurrent: int | None
    total_slots: int
    capacity: Dims
    capacity_slots: int
    concurrent_capacity: int | None
    room: Dims
    concurrent_room: int | None
    lending: bool
    # The provider's word, as the snapshot had it: a pause's end (Redis ms) and the minute window's
    # external usage (tokens, requests), and a rolling model's outside rate (tokens, requests a minute).
    paused_until_ms: int = 0
    external: tuple[int, int] = (0, 0)
    outside: tuple[int, int] = (0, 0)


def seed_pool(limit: int, settled: int, n: int) -> int:
    return max(0, limit - settled) // n


def _slots(dims: Dims, conc: int | None, averages: Averages) -> int:
    # Exact integer arithmetic on the averages' ratios: 66 requests at an average of 2.2 are 30 slots.
    ratios = [avg.as_integer_ratio() for avg in averages]
    slots = []
    for dim, amount in zip(DIMS, dims, strict=True):
        if amount is not None:
            num, den = ratios[dim.kind]
            if num > 0:
                slots.append(max(0, amount) * den // num)
    if conc is not None:
        slots.append(max(0, conc))
    return min(slots) if slots else UNBOUNDED_SLOTS


def compute_pool(
    limits: ModelLimits, snap: Snapshot, averages: Averages, lend: bool = False, pending: Pending = NO_PENDING
) -> Pool:
    n = max(snap.instances, 1)
    # Borrowing is for requests that queued: only with this instance's waiters on record (lib.lua).
    lending = lend and snap.own_waiting == 1 and not snap.others_waiting
    extra = pending.amounts
    rates: list[int | None] = []
    capacity: list[int | None] = []
    room: list[int | None] = []
    for i, limit in enumerate(limits.rates):
        if limit is None:
            rates.append(None)
            capacity.append(None)
            room.append(None)
            continue
        pool = seed_pool(limit, snap.settled[i], n)
        own = snap.own_open[i] + extra[i]
        left = limit - snap.settled[i] - snap.open[i] - extra[i]
        rates.append(pool)
        if lending:
            capacity.append(max(0, own + left))
            room.append(max(0, left))
        else:
            capacity.append(pool)
            bound = min(pool - own, left)
            if snap.others_waiting:
                # While others wait, what this instance holds of the window stays within
                # floor(limit / N) (lib.lua).
                bound = min(bound, limit // n - snap.own_settled[i] - own)
            room.append(max(0, bound))
    conc = conc_cap = conc_room = None
    if limits.max_concurrent is not None:
        conc = limits.max_concurrent // n
        own_inflight = snap.own_inflight + pending.count
        left = limits.max_concurrent - snap.inflight_total - pending.count
        conc_cap = max(0, own_inflight + left) if lending else conc
        conc_room = max(0, left if lending else min(conc - own_inflight, left))
    reported, held = tuple(rates), tuple(capacity)
    return Pool(
        rates=reported,
        max_concurrent=conc,
        total_slots=_slots(reported, conc, averages),
        capacity=held,
        capacity_slots=_slots(held, conc_cap, averages),
        concurrent_capacity=conc_cap,
        room=tuple(room),
        concurrent_room=conc_room,
        lending=lending,
        paused_until_ms=snap.paused_until_ms,
        external=snap.external,
        outside=snap.outside,
    )
