"""An instance's local state: its job types and, per model, the ledger's view plus local accounting."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..config import Pricing
from ..types import DIMS, Amounts, Estimate, ModelLimits, Snapshot
from .pools import NO_PENDING, Averages, Pending, Pool, compute_pool
from .rolling import refilled
from .usage import TypeUsage
from .waiting import WaitQueue


@dataclass(frozen=True, slots=True)
class Reservation:
    """A local claim on a job type's share, made before the ledger is asked."""

    minute_window: int
    day_window: int


@dataclass(slots=True)
class JobType:
    name: str
    estimate: Estimate
    memory_kb: int | None
    flexible: bool
    initial_ratio: float
    ratio: float
    max_wait_ms: dict[str, int]
    in_flight: int = 0


@dataclass(slots=True)
class ModelState:
    name: str
    limits: ModelLimits
    pricing: Pricing
    snapshot: Snapshot
    own_seq: int = 0
    pending: Pending = NO_PENDING
    usage: dict[str, TypeUsage] = field(default_factory=dict)
    queues: dict[str, WaitQueue[Reservation]] = field(default_factory=dict)
    _pool: Pool | None = None
    # The Redis time a rolling model's cached pool was refilled to.
    _pool_at: int = 0

    def invalidate(self) -> None:
        self._pool = None

    def apply(self, snap: Snapshot, own: bool) -> None:
        """Applies a ledger state unless a newer one is already known. The instance's own fields
        come only from states read for this instance, tracked by their own sequence number."""
        cur = self.snapshot
        newer = snap.seq >= cur.seq
        newer_own = own and snap.seq >= self.own_seq
        if not newer and not newer_own:
            return
        base = snap if newer else cur
        src = snap if newer_own else cur
        if newer_own:
            self.own_seq = snap.seq
        self._pool = None
        if src is base:
            # The usual case: the instance's own reply, in order.
            self.snapshot = snap
            return
        same = (src.minute_window == base.minute_window, src.day_window == base.day_window)
        self.snapshot = replace(
            base,
            own_open=_in_windows(src.own_open, same),
            own_settled=_in_windows(src.own_settled, same),
            own_inflight=src.own_inflight,
            own_waiting=src.own_waiting,
        )

    def pool(self, averages: Averages, lend: bool, now_ms: int) -> Pool:
        """What this instance may take on the model at Redis time now_ms, attempts on their way to
        Redis included. A rolling model's buckets have refilled since the snapshot was read."""
        if self.limits.rolling:
            if self._pool is None or self._pool_at != now_ms:
                self._pool = self.pool_at(averages, lend, now_ms)
                self._pool_at = now_ms
        elif self._pool is None:
            self._pool = compute_pool(self.limits, self.snapshot, averages, lend, self.pending)
        return self._pool

    def pool_at(self, averages: Averages, lend: bool, now_ms: int) -> Pool:
        """A rolling model's pool as it will be at now_ms, nothing else changing."""
        snap = refilled(self.limits, self.snapshot, now_ms)
        return compute_pool(self.limits, snap, averages, lend, self.pending)


def _in_windows(values: Amounts, same: tuple[bool, bool]) -> Amounts:
    """Own counters (RATE_DIMS order) kept where their window (minute or day) is still the current
    one, else 0."""
    minute, day = same
    if minute and day:
        return values
    return tuple(v if (day if d.per_day else minute) else 0 for d, v in zip(DIMS, values, strict=True))
