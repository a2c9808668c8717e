"""An instance's local state and the logic on it, with no I/O: job types, per-model ledger views,
local reservations against the job types' shares, the wait queues and the open leases."""

from __future__ import annotations

import logging

from ..backend.ledger import ClosedLease
from ..capacity.changes import ChangeSignal
from ..capacity.leases import Lease, LeaseTable
from ..capacity.pools import Pool, compute_pool
from ..capacity.rolling import first_fit_ms, refilled
from ..capacity.shares import TypeUse, allocated_slots, load_of, may_take, memory_slots, rebalance
from ..capacity.state import JobType, ModelState, Reservation
from ..capacity.usage import TypeUsage
from ..capacity.waiting import WaitPlaces, WaitQueue
from ..config import Settings
from ..types import INPUT, KINDS, Estimate, ModelLimits, Outcome, Snapshot
from .clock import RedisClock
from .timers import Pauses, Refills

log = logging.getLogger(__name__)

_LOST_KEPT = 100_000


def model_limits(settings: Settings) -> dict[str, ModelLimits]:
    return {
        name: ModelLimits(
            rates=m.rates(),
            max_concurrent=m.max_concurrent_requests,
            rolling=m.window == "rolling",
            cached_as_input=m.cached_tokens_count_as_input,
        )
        for name, m in settings.models.items()
    }


def _over(limits: ModelLimits, estimate: Estimate, actual: Estimate) -> bool:
    """Whether a job used more than its estimate: in tokens or requests whatever the model limits,
    so that estimates can be tuned from it; in input or output tokens where the model limits them
    apart (elsewhere job types need not estimate them)."""
    counted = len(KINDS) if limits.token_kinds else INPUT
    return any(a > e for a, e in zip(actual.per_kind()[:counted], estimate.per_kind()[:counted], strict=True))


def _amounts(limits: ModelLimits, e: Estimate) -> str:
    if limits.token_kinds:
        return f"{e.tokens} tokens ({e.input_tokens} input, {e.output_tokens} output) / {e.requests} requests"
    return f"{e.tokens} tokens / {e.requests} requests"


class LocalState:
    def __init__(self, settings: Settings, instance_id: str, memory_capacity_kb: int | None) -> None:
        self.settings = settings
        self.instance_id = instance_id
        self.memory_kb = memory_capacity_kb
        self.lend = settings.lend_idle_capacity
        self._averages = settings.average_estimates()
        self.model_order = settings.model_order()
        ratios = settings.initial_ratios()
        self.job_types = {
            name: JobType(
                name=name,
                estimate=jt.estimate(),
                memory_kb=jt.estimated_memory_kb,
                flexible=jt.ratio.flexible,
                initial_ratio=ratios[name],
                ratio=ratios[name],
                max_wait_ms=dict(jt.max_wait_ms),
            )
            for name, jt in settings.job_types.items()
        }
        self.limits = model_limits(settings)
        self.wait_places = WaitPlaces(settings.max_waiters)
        self.models = {
            name: ModelState(
                name=name,
                limits=self.limits[name],
                pricing=settings.models[name].pricing,
                snapshot=Snapshot.empty(),
                usage={jt: TypeUsage() for jt in self.job_types},
                queues={jt: WaitQueue(self.wait_places) for jt in self.job_types},
            )
            for name in settings.models
        }
        self.leases = LeaseTable()
        self.clock = RedisClock()
        self.pauses = Pauses(self.clock, self.pump)
        self.refills = Refills(self.clock, self.pump)
        # Pools, ratios, in-flight or waiting counts may have moved: the live view follows it.
        self.changes = ChangeSignal()
        self._releases_since_rebalance = 0
        # Leases dropped at a new registration, remembered so that a Release of one the ledger no
        # longer knows can say it was lost (Redis restarted empty) rather than never issued.
        self.lost_leases: dict[str, None] = {}

    # ----- ledger views ----------------------------------------------------------------------

    def pool(self, model: ModelState) -> Pool:
        # Only a rolling model's pool moves with time (and only then is the clock read).
        now = self.clock.now_ms() if model.limits.rolling else 0
        return model.pool(self._averages, self.lend, now)

    def apply_states(self, states: dict[str, Snapshot]) -> None:
        """States read for this instance (own fields included)."""
        for name, snap in states.items():
            model = self.models.get(name)
            if model is not None:
                self.clock.sync(snap.now_ms)
                model.apply(snap, own=True)
        self.pump_all()

    # ----- local shares ----------------------------------------------------------------------

    def memory_slots(self, jt: JobType) -> int | None:
        return memory_slots(self.memory_kb, jt.ratio, jt.memory_kb)

    def allocated(self, model: ModelState, jt: JobType) -> int:
        return allocated_slots(self.pool(model), jt.ratio, self.settings.min_job_type_capacity, self.memory_slots(jt))

    def reserve(self, model: ModelState, jt: JobType) -> Reservation | None:
        """A local claim on the job type's share of the model, or None when it has no room."""
        if self.pauses.holds(model):
            return None
        snap = model.snapshot
        use = model.usage[jt.name]
        use.roll(snap.minute_window, snap.day_window)
        if not self._fits(model, jt, self.pool(model)):
            return None
        model.pending = model.pending.add(jt.estimate, 1)
        model.invalidate()
        use.in_flight += 1
        jt.in_flight += 1
        use.charge(snap.minute_window, snap.day_window, jt.estimate)
        self.changes.notify()
        return Reservation(snap.minute_window, snap.day_window)

    def _fits(self, model: ModelState, jt: JobType, pool: Pool) -> bool:
        use = model.usage[jt.name]
        return may_take(
            pool,
            jt.ratio,
            TypeUse(use.open_now(), self.window_jobs(model, use), jt.in_flight),
            jt.estimate,
            self.settings.min_job_type_capacity,
            self.memory_slots(jt),
        )

    def _first_refill_fit(self, model: ModelState) -> int | None:
        """The Redis time a rolling model's buckets will hold enough for the first of its waiters."""
        base = refilled(model.limits, model.snapshot, self.clock.now_ms())
        times = []
        for name, queue in model.queues.items():
            if queue.waiting():
                jt = self.job_types[name]

                def fits(snap: Snapshot, jt: JobType = jt) -> bool:
                    pool = compute_pool(model.limits, snap, self._averages, self.lend, model.pending)
                    return self._fits(model, jt, pool)

                at = first_fit_ms(model.limits, base, fits)
                if at is not None:
                    times.append(at)
        return min(times, default=None)

    def unreserve(self, model: ModelState, jt: JobType, res: Reservation, pending: bool = True) -> None:
        if pending:
            model.pending = model.pending.add(jt.estimate, -1)
            model.invalidate()
        use = model.usage[jt.name]
        use.in_flight -= 1
        jt.in_flight -= 1
        use.charge(res.minute_window, res.day_window, jt.estimate, -1)

    @staticmethod
    def window_jobs(model: ModelState, use: TypeUsage) -> int:
        return use.window_jobs(model.limits.tracks_minute, model.limits.tracks_day)

    def pump(self, model: ModelState) -> None:
        """Hands reservations to the model's waiters, in order, while they fit."""
        self.changes.notify()
        waiting = False
        for name, queue in model.queues.items():
            if len(queue):
                jt = self.job_types[name]
                queue.wake_in_order(lambda jt=jt: self.reserve(model, jt))  # type: ignore[misc]
                waiting = waiting or queue.waiting()
        # A paused model's waiters are woken by the pause's end.
        if waiting and model.limits.rolling and not self.pauses.paused_until(model):
            self.refills.ensure(model, self._first_refill_fit)

    def pump_all(self) -> None:
        for model in self.models.values():
            self.pump(model)

    # ----- leases ----------------------------------------------------------------------------

    def free_slot(self, lease: Lease) -> tuple[ModelState, JobType, TypeUsage]:
        model = self.models[lease.model]
        jt = self.job_types[lease.job_type]
        use = model.usage[jt.name]
        use.in_flight -= 1
        jt.in_flight -= 1
        return model, jt, use

    def forget(self, lease: Lease) -> None:
        """Drops a lease the ledger closed at its estimate without telling this instance."""
        model, _, use = self.free_slot(lease)
        use.close(lease.minute_window, lease.day_window, lease.estimate, None)
        self.pump(model)

    def settle_closed(self, closed: ClosedLease) -> None:
        """Mirrors a closed lease in the local job-type accounting, once."""
        lease = self.leases.pop(closed.lease_id)
        if lease is None:
            return
        model, jt, use = self.free_slot(lease)
        # An overage reported after its window closed belongs to the window the ledger is in now.
        use.roll(model.snapshot.minute_window, model.snapshot.day_window)
        actual = closed.actual.spent(model.limits.cached_as_input)
        known = closed.outcome is not Outcome.FAILED_UNKNOWN_USAGE
        use.close(lease.minute_window, lease.day_window, lease.estimate, actual if known else None)
        if known and _over(model.limits, lease.estimate, actual):
            use.overages += 1
            log.warning(
                "overage: job type %s on %s estimated %s, used %s",
                jt.name,
                model.name,
                _amounts(model.limits, lease.estimate),
                _amounts(model.limits, actual),
                extra={"model": model.name, "lease_id": lease.lease_id, "job_id": lease.job_id},
            )
        self._releases_since_rebalance += 1
        if self._releases_since_rebalance >= self.settings.ratio_adjustment.releases_per_adjustment:
            self.rebalance()
        self.pump(model)
        if jt.memory_kb is not None:
            self.pump_all()

    def lose(self, lease: Lease) -> None:
        """Forgets a lease the ledger no longer knows, and remembers (a while) that it was lost."""
        self.lost_leases[lease.lease_id] = None
        if len(self.lost_leases) > _LOST_KEPT:
            del self.lost_leases[next(iter(self.lost_leases))]
        self.forget(lease)

    def drain_leases(self) -> None:
        """Forgets every open lease: a new registration closes whatever the ledger still held."""
        for lease in self.leases.drain():
            self.lose(lease)

    # ----- rebalancing -----------------------------------------------------------------------

    def rebalance(self) -> bool:
        """One local rebalancing cycle; wakes waiters when ratios moved."""
        self._releases_since_rebalance = 0
        # A type's load is that of its busiest model: queued on one model's budget is busy, even
        # with room on models it has not reached yet.
        loads = {
            jt.name: max(
                load_of(self.window_jobs(m, m.usage[jt.name]), len(m.queues[jt.name]), self.allocated(m, jt))
                for m in self.models.values()
            )
            for jt in self.job_types.values()
        }
        ratios = {n: jt.ratio for n, jt in self.job_types.items()}
        flexible = {n: jt.flexible for n, jt in self.job_types.items()}
        new = rebalance(ratios, flexible, loads, self.settings.ratio_adjustment)
        if new == ratios:
            return False
        for name, ratio in new.items():
            self.job_types[name].ratio = ratio
        log.info("ratios rebalanced: %s", {n: round(r, 4) for n, r in new.items()})
        self.pump_all()
        return True
