"""One instance: joins the Redis ledger and the local job-type logic into the Acquire, Release and
allocation flows.

An Acquire first reserves locally (the job type's share of this instance's pool, including attempts
still on their way to Redis), then asks the ledger once; the ledger is the authority across
instances, the local shares only split what this instance may take.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterable
from typing import Any

from .backend.ledger import AcquireReply, ClosedLease, Ledger, LedgerUnavailable, NotRegistered, OpenLease
from .capacity.changes import ChangeSignal
from .capacity.leases import Lease, LeaseTable
from .capacity.pools import Pool
from .capacity.shares import TypeUse, allocated_slots, load_of, may_take, memory_slots, rebalance
from .capacity.state import JobType, ModelState, Reservation
from .capacity.usage import TypeUsage
from .capacity.waiting import Waiter, WaitQueue
from .capacity.windows import default_wait_ms, next_minute_boundary
from .config import Pricing, Settings
from .errors import DeadlineExceeded, Exhausted, NotFound, Unavailable
from .results import AllocationReport, Grant, ReleaseResult, TypeOnModel, TypeReport
from .types import ModelLimits, Outcome, Snapshot, Usage

log = logging.getLogger(__name__)

# Redis time moves on by a little after a boundary before the new window is read.
_BOUNDARY_SLACK_S = 0.02
_REVOKE_RETRY_S = 1.0


def _limits(settings: Settings) -> dict[str, ModelLimits]:
    return {
        name: ModelLimits(
            rates=(m.tokens_per_minute, m.requests_per_minute, m.tokens_per_day, m.requests_per_day),
            max_concurrent=m.max_concurrent_requests,
        )
        for name, m in settings.models.items()
    }


class Limiter:
    def __init__(
        self, settings: Settings, ledger: Ledger, memory_capacity_kb: int | None, lease_id_entropy: int = 12
    ) -> None:
        self.settings = settings
        self.instance_id = ledger.instance_id
        self._ledger = ledger
        self._memory_kb = memory_capacity_kb
        self._entropy = lease_id_entropy
        self._avg_tokens, self._avg_requests = settings.average_estimates()
        self.model_order = settings.model_order()
        ratios = settings.initial_ratios()
        self.job_types = {
            name: JobType(
                name=name,
                tokens=jt.estimated_tokens,
                requests=jt.estimated_requests,
                memory_kb=jt.estimated_memory_kb,
                flexible=jt.ratio.flexible,
                initial_ratio=ratios[name],
                ratio=ratios[name],
                max_wait_ms=dict(jt.max_wait_ms),
            )
            for name, jt in settings.job_types.items()
        }
        self._limits = _limits(settings)
        self.models = {
            name: ModelState(
                name=name,
                limits=self._limits[name],
                pricing=settings.models[name].pricing,
                snapshot=Snapshot.empty(),
                usage={jt: TypeUsage() for jt in self.job_types},
                queues={jt: WaitQueue() for jt in self.job_types},
            )
            for name in settings.models
        }
        self.leases = LeaseTable()
        # Pools, ratios, in-flight or waiting counts may have moved: the live view follows it.
        self.changes = ChangeSignal()
        self._acquiring: dict[str, asyncio.Future[Grant]] = {}
        self._releases_since_rebalance = 0
        self._offset_ms = 0.0
        self._boundary: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._reregistering: asyncio.Task[None] | None = None
        self._closing = False
        self.registered = False

    # ----- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self._ledger.load()
        await self._register()

    async def close(self) -> None:
        self._closing = True
        if self._boundary is not None:
            self._boundary.cancel()
        tasks = [*self._background, *([self._reregistering] if self._reregistering else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.registered:
            self.registered = False
            with contextlib.suppress(LedgerUnavailable):
                await self._ledger.unregister()

    async def _register(self) -> None:
        # Whatever this process held in the ledger is closed by a (re-)registration.
        for lease in self.leases.drain():
            self._forget(lease)
        states = await self._ledger.register(self._limits)
        self.registered = True
        self._apply_states(states)

    async def heartbeat(self) -> None:
        try:
            states = await self._ledger.heartbeat()
        except NotRegistered:
            log.warning("the ledger had declared this instance stale; registering again")
            await self._register()
            return
        self.registered = True
        self._apply_states(states)

    def _apply_states(self, states: dict[str, Snapshot]) -> None:
        for name, snap in states.items():
            model = self.models.get(name)
            if model is not None:
                self._clock(snap.now_ms)
                model.apply(snap, own=True)
        self._schedule_boundary()
        self._pump_all()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ----- time ------------------------------------------------------------------------------

    def _clock(self, redis_now_ms: int) -> None:
        self._offset_ms = redis_now_ms - asyncio.get_running_loop().time() * 1000

    def redis_now_ms(self) -> int:
        return int(asyncio.get_running_loop().time() * 1000 + self._offset_ms)

    def _loop_time(self, redis_ms: int) -> float:
        return (redis_ms - self._offset_ms) / 1000

    def _schedule_boundary(self) -> None:
        """Wakes at the next minute boundary on Redis time: new windows, capacity comes back."""
        if self._boundary is not None:
            self._boundary.cancel()
        at = self._loop_time(next_minute_boundary(self.redis_now_ms())) + _BOUNDARY_SLACK_S
        self._boundary = asyncio.get_running_loop().call_at(at, self._on_boundary)

    def _on_boundary(self) -> None:
        self._boundary = None
        self._spawn(self._refresh())

    async def _refresh(self) -> None:
        try:
            await self.heartbeat()
        except LedgerUnavailable as e:
            log.warning("cannot read the ledger: %s", e)
            self._schedule_boundary()

    async def resubscribed(self) -> None:
        await self._refresh()

    # ----- ledger state ----------------------------------------------------------------------

    def pool(self, model: ModelState) -> Pool:
        return model.pool(self._avg_tokens, self._avg_requests)

    def on_event(self, event: dict[str, Any]) -> None:
        """An event published by any instance's script (this one's included)."""
        if self.instance_id in event.get("gone", ()):
            self._reregister()
            return
        seq = int(event["q"])
        owner = event.get("o")
        now = self.redis_now_ms()
        touched = []
        for name, state in event.get("s", {}).items():
            model = self.models.get(name)
            if model is not None:
                model.apply(Snapshot.from_reply(seq, now, state), own=owner == self.instance_id)
                touched.append(model)
        for raw in event.get("c", ()):
            if raw.get("i") == self.instance_id:
                self._settle_closed(ClosedLease.from_json(raw))
        for model in touched:
            self._pump(model)

    def _reregister(self) -> None:
        # Leaving on purpose publishes this instance as gone too; that must not bring it back.
        if self._closing:
            return
        if self._reregistering is None or self._reregistering.done():
            self._reregistering = asyncio.ensure_future(self._register_quietly())

    async def _register_quietly(self) -> None:
        try:
            await self._register()
        except LedgerUnavailable as e:
            log.warning("cannot register again yet: %s", e)

    # ----- local shares ----------------------------------------------------------------------

    def _memory_slots(self, jt: JobType) -> int | None:
        return memory_slots(self._memory_kb, jt.ratio, jt.memory_kb)

    def _reserve(self, model: ModelState, jt: JobType) -> Reservation | None:
        snap = model.snapshot
        use = model.usage[jt.name]
        use.roll(snap.minute_window, snap.day_window)
        fits = may_take(
            self.pool(model),
            jt.ratio,
            TypeUse(use.snapshot(), use.in_flight, jt.in_flight),
            jt.tokens,
            jt.requests,
            self.settings.min_job_type_capacity,
            self._memory_slots(jt),
        )
        if not fits:
            return None
        model.pending = model.pending.add(jt.tokens, jt.requests, 1)
        model.invalidate()
        use.in_flight += 1
        jt.in_flight += 1
        use.charge(snap.minute_window, snap.day_window, jt.tokens, jt.requests)
        self.changes.notify()
        return Reservation(snap.minute_window, snap.day_window)

    def _unreserve(self, model: ModelState, jt: JobType, res: Reservation, pending: bool = True) -> None:
        if pending:
            model.pending = model.pending.add(-jt.tokens, -jt.requests, -1)
            model.invalidate()
        use = model.usage[jt.name]
        use.in_flight -= 1
        jt.in_flight -= 1
        use.charge(res.minute_window, res.day_window, -jt.tokens, -jt.requests)

    def _pump(self, model: ModelState) -> None:
        self.changes.notify()
        for name, queue in model.queues.items():
            if len(queue):
                jt = self.job_types[name]
                queue.wake_in_order(lambda jt=jt: self._reserve(model, jt))  # type: ignore[misc]

    def _pump_all(self) -> None:
        for model in self.models.values():
            self._pump(model)

    # ----- Acquire ---------------------------------------------------------------------------

    async def acquire(
        self, job_id: str, job_type: str, models: list[str], ttl_ms: int, time_left_s: float | None
    ) -> Grant:
        lease = self.leases.for_job(job_id)
        if lease is not None:
            return self._grant_of(lease)
        while (running := self._acquiring.get(job_id)) is not None:
            log.info("Acquire of job %s joins the attempt already in progress", job_id)
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                # Either this caller was cancelled, or the one it joined was: then try on its own.
                if not running.cancelled():
                    raise
        if not self.registered:
            raise Unavailable("this instance is not registered with Redis yet; try again or another instance")
        future: asyncio.Future[Grant] = asyncio.get_running_loop().create_future()
        self._acquiring[job_id] = future
        try:
            grant = await self._acquire(job_id, self.job_types[job_type], models, ttl_ms, time_left_s)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as e:
            future.set_exception(e)
            # Joined retries see it; nobody else must be told about an unobserved exception.
            future.exception()
            raise
        else:
            future.set_result(grant)
            return grant
        finally:
            del self._acquiring[job_id]

    async def _acquire(
        self, job_id: str, jt: JobType, models: list[str], ttl_ms: int, time_left_s: float | None
    ) -> Grant:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = None if time_left_s is None else started + time_left_s
        tried: list[str] = []
        queued = False
        for name in models:
            tried.append(name)
            wait_ms = jt.max_wait_ms.get(name)
            if wait_ms is None:
                wait_ms = default_wait_ms(self.redis_now_ms())
            until = loop.time() + wait_ms / 1000
            capped = deadline is not None and deadline <= until
            if capped and deadline is not None:
                until = deadline
            got, waited = await self._acquire_on(self.models[name], jt, job_id, ttl_ms, until, len(tried) == 1)
            queued = queued or waited
            if isinstance(got, OpenLease):
                return Grant(
                    lease_id=got.lease_id,
                    model=got.model,
                    models_tried=(got.model,),
                    tokens=got.estimate_tokens,
                    requests=got.estimate_requests,
                    waited_ms=0,
                    expires_at_ms=got.expires_at_ms,
                    instance_id=got.owner,
                )
            if got is not None:
                got.models_tried = tuple(tried)
                # Time spent queued or escalating; a grant that never queued waited 0 ms.
                got.waited_ms = int((loop.time() - started) * 1000) if queued else 0
                return self._grant_of(got)
            if capped:
                raise DeadlineExceeded(f"the deadline ended the wait for capacity after trying {', '.join(tried)}")
        raise Exhausted(
            f"all models exhausted for job type {jt.name!r}: tried {', '.join(tried)} "
            "and none had capacity within its wait"
        )

    def _grant_of(self, lease: Lease) -> Grant:
        return Grant(
            lease_id=lease.lease_id,
            model=lease.model,
            models_tried=lease.models_tried,
            tokens=lease.tokens,
            requests=lease.requests,
            waited_ms=lease.waited_ms,
            expires_at_ms=lease.expires_at_ms,
            instance_id=self.instance_id,
        )

    async def _acquire_on(
        self, model: ModelState, jt: JobType, job_id: str, ttl_ms: int, until: float, first: bool
    ) -> tuple[Lease | OpenLease | None, bool]:
        """Waits in the model's FIFO queue for the job type until `until` (loop time). Returns the
        lease (or None when the wait ended) and whether it had to queue."""
        loop = asyncio.get_running_loop()
        queue = model.queues[jt.name]
        res = self._reserve(model, jt) if not len(queue) else None
        if res is None and first:
            # One look at the ledger even when waiting: another instance may hold this job's lease.
            reply = await self._ledger_acquire(model, jt, job_id, "", ttl_ms, peek=True)
            if reply.existing is not None:
                return reply.existing, False
            model.apply(reply.snapshot, own=True)
            res = self._reserve(model, jt) if not len(queue) else None
        waiter: Waiter[Reservation] | None = None
        # Whether the waiter's current reservation has been taken over by this coroutine.
        taken = False
        try:
            while True:
                if res is not None:
                    got = await self._attempt(model, jt, res, job_id, ttl_ms)
                    res = None
                    if got is not None:
                        return got, waiter is not None
                if waiter is None:
                    waiter = queue.join()
                    self.changes.notify()
                else:
                    waiter.rearm()
                taken = False
                timeout = until - loop.time()
                if timeout <= 0:
                    return None, True
                try:
                    res = await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
                except TimeoutError:
                    return None, True
                taken = True
        finally:
            if waiter is not None:
                queue.leave(waiter)
                if waiter.woken and not taken and not waiter.future.cancelled():
                    # Woken with a reservation it can no longer use (timed out or cancelled).
                    self._unreserve(model, jt, waiter.future.result())
                self._pump(model)

    async def _ledger_acquire(
        self, model: ModelState, jt: JobType, job_id: str, lease_id: str, ttl_ms: int, peek: bool
    ) -> AcquireReply:
        try:
            reply = await self._ledger.acquire(
                model.name, job_id, jt.name, lease_id, jt.tokens, jt.requests, ttl_ms, peek
            )
        except NotRegistered:
            self.registered = False
            self._reregister()
            raise Unavailable(
                "this instance had been declared stale by the ledger and is registering again; retry"
            ) from None
        except LedgerUnavailable as e:
            raise Unavailable(f"Redis is unreachable, no capacity can be granted: {e}") from None
        self._clock(reply.snapshot.now_ms)
        return reply

    async def _attempt(
        self, model: ModelState, jt: JobType, res: Reservation, job_id: str, ttl_ms: int
    ) -> Lease | OpenLease | None:
        lease_id = f"{self.instance_id}/{secrets.token_urlsafe(self._entropy)}"
        try:
            reply = await self._ledger_acquire(model, jt, job_id, lease_id, ttl_ms, peek=False)
        except BaseException as e:
            self._unreserve(model, jt, res)
            self._pump(model)
            if isinstance(e, asyncio.CancelledError):
                # The caller left while the script was on its way: it may have granted the lease.
                self._spawn(self._revoke(lease_id))
            raise
        return self._settle(model, jt, res, job_id, lease_id, reply)

    def _settle(
        self, model: ModelState, jt: JobType, res: Reservation, job_id: str, lease_id: str, reply: AcquireReply
    ) -> Lease | OpenLease | None:
        model.pending = model.pending.add(-jt.tokens, -jt.requests, -1)
        model.apply(reply.snapshot, own=True)
        if reply.status != "granted":
            self._unreserve(model, jt, res, pending=False)
            if reply.existing is not None:
                self._pump(model)
            return reply.existing
        snap = reply.snapshot
        if (snap.minute_window, snap.day_window) != (res.minute_window, res.day_window):
            use = model.usage[jt.name]
            use.charge(res.minute_window, res.day_window, -jt.tokens, -jt.requests)
            use.charge(snap.minute_window, snap.day_window, jt.tokens, jt.requests)
        lease = Lease(
            lease_id=lease_id,
            job_id=job_id,
            job_type=jt.name,
            model=model.name,
            tokens=jt.tokens,
            requests=jt.requests,
            minute_window=snap.minute_window,
            day_window=snap.day_window,
            expires_at_ms=reply.expires_at_ms,
            models_tried=(),
            waited_ms=0,
        )
        self.leases.add(lease)
        self._arm_expiry(lease)
        return lease

    async def _revoke(self, lease_id: str) -> None:
        """Releases, with a full refund, a lease granted to a caller that left before the reply."""
        # A script sent just before the cancellation may still be queued behind this release: a
        # second try a moment later finds the lease if it was granted after all.
        for delay in (0.0, _REVOKE_RETRY_S):
            await asyncio.sleep(delay)
            try:
                reply = await self._ledger.release(lease_id, Outcome.SUCCESS, Usage())
            except (LedgerUnavailable, NotRegistered) as e:
                log.warning("could not revoke lease %s, it will expire by its TTL: %s", lease_id, e)
                return
            if reply.status != "unknown":
                model = self.models.get(reply.closed.model) if reply.closed else None
                if model is not None and reply.snapshot is not None:
                    model.apply(reply.snapshot, own=True)
                    self._pump(model)
                return

    # ----- leases ----------------------------------------------------------------------------

    def _arm_expiry(self, lease: Lease) -> None:
        if lease.timer is not None:
            lease.timer.cancel()
        loop = asyncio.get_running_loop()
        lease.timer = loop.call_at(self._loop_time(lease.expires_at_ms), self._on_expiry, lease.lease_id)

    def _on_expiry(self, lease_id: str) -> None:
        self._spawn(self._expire(lease_id))

    async def _expire(self, lease_id: str) -> None:
        try:
            reply = await self._ledger.expire(lease_id)
        except (LedgerUnavailable, NotRegistered) as e:
            log.warning("cannot expire lease %s yet: %s", lease_id, e)
            lease = self.leases.get(lease_id)
            if lease is not None:
                lease.expires_at_ms = self.redis_now_ms() + self.settings.heartbeat_interval_ms
                self._arm_expiry(lease)
            return
        if reply.status == "extended":
            lease = self.leases.get(lease_id)
            if lease is not None:
                lease.expires_at_ms = reply.expires_at_ms
                self._arm_expiry(lease)
            return
        if reply.status == "expired" and reply.closed is not None:
            log.info("lease %s expired unreleased; its estimate stays committed", lease_id)
            model = self.models.get(reply.closed.model)
            if model is not None and reply.snapshot is not None:
                model.apply(reply.snapshot, own=True)
        if reply.closed is not None:
            self._settle_closed(reply.closed)
        else:
            lease = self.leases.pop(lease_id)
            if lease is not None:
                self._forget(lease)

    def _forget(self, lease: Lease) -> None:
        """Drops a lease the ledger no longer holds, with no usage to account."""
        model, _, _ = self._free_slot(lease)
        self._pump(model)

    def _free_slot(self, lease: Lease) -> tuple[ModelState, JobType, TypeUsage]:
        model = self.models[lease.model]
        jt = self.job_types[lease.job_type]
        use = model.usage[jt.name]
        use.in_flight -= 1
        jt.in_flight -= 1
        return model, jt, use

    def _settle_closed(self, closed: ClosedLease) -> None:
        """Mirrors a closed lease in the local job-type accounting, once."""
        lease = self.leases.pop(closed.lease_id)
        if lease is None:
            return
        model, jt, use = self._free_slot(lease)
        # An overage reported after its window closed belongs to the window the ledger is in now.
        use.roll(model.snapshot.minute_window, model.snapshot.day_window)
        actual = closed.actual
        if closed.outcome is not Outcome.FAILED_UNKNOWN_USAGE:
            use.settle(
                lease.minute_window,
                lease.day_window,
                actual.tokens - lease.tokens,
                actual.request_count - lease.requests,
            )
            # Counted whatever the model limits, so that estimates can be tuned from it.
            if actual.tokens > lease.tokens or actual.request_count > lease.requests:
                use.overages += 1
                log.warning(
                    "overage: job type %s on %s estimated %d tokens / %d requests, used %d / %d",
                    jt.name,
                    model.name,
                    lease.tokens,
                    lease.requests,
                    actual.tokens,
                    actual.request_count,
                )
        self._releases_since_rebalance += 1
        if self._releases_since_rebalance >= self.settings.ratio_adjustment.releases_per_adjustment:
            self.rebalance()
        self._pump(model)
        if jt.memory_kb is not None:
            self._pump_all()

    # ----- Release / ExtendLease -------------------------------------------------------------

    async def release(self, lease_id: str, outcome: Outcome, usage: Usage) -> ReleaseResult:
        try:
            reply = await self._ledger.release(lease_id, outcome, usage)
        except (LedgerUnavailable, NotRegistered) as e:
            raise Unavailable(f"Redis is unreachable, the release was not recorded: {e}") from None
        if reply.status == "unknown" or reply.closed is None:
            raise NotFound(f"lease {lease_id!r} is unknown: it was never issued, or closed over an hour ago")
        closed = reply.closed
        if closed.expired and reply.status == "closed":
            raise NotFound(
                f"lease {lease_id!r} expired before it was released (TTL passed or its instance died); "
                "its estimate stays committed"
            )
        model = self.models.get(closed.model)
        mine = closed.owner == self.instance_id
        if reply.status == "released" and model is not None and reply.snapshot is not None:
            self._clock(reply.snapshot.now_ms)
            model.apply(reply.snapshot, own=mine)
            if not mine:
                self._pump(model)
        if mine:
            # Settling wakes the model's waiters too.
            self._settle_closed(closed)
        pricing = model.pricing if model is not None else Pricing()
        cost = pricing.cost_usd(closed.actual.input_tokens, closed.actual.cached_tokens, closed.actual.output_tokens)
        return ReleaseResult(closed, cost)

    async def extend(self, lease_id: str, ttl_ms: int) -> int:
        try:
            status, expires_at = await self._ledger.extend(lease_id, ttl_ms)
        except (LedgerUnavailable, NotRegistered) as e:
            raise Unavailable(f"Redis is unreachable, the lease was not extended: {e}") from None
        if status != "extended":
            raise NotFound(f"lease {lease_id!r} is not open (released, expired or unknown)")
        lease = self.leases.get(lease_id)
        if lease is not None:
            lease.expires_at_ms = expires_at
            self._arm_expiry(lease)
        return expires_at

    # ----- rebalancing -----------------------------------------------------------------------

    def rebalance(self) -> bool:
        """One local rebalancing cycle; wakes waiters when ratios moved."""
        self._releases_since_rebalance = 0
        # A type's load is that of its busiest model: queued on one model's budget is busy, even
        # with room on models it has not reached yet.
        loads = {
            jt.name: max(
                load_of(m.usage[jt.name].in_flight, len(m.queues[jt.name]), self._allocated(m, jt))
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
        self._pump_all()
        return True

    def _allocated(self, model: ModelState, jt: JobType) -> int:
        return allocated_slots(self.pool(model), jt.ratio, self.settings.min_job_type_capacity, self._memory_slots(jt))

    # ----- GetAllocation ---------------------------------------------------------------------

    def allocation(self) -> AllocationReport:
        pools = {name: self.pool(m) for name, m in self.models.items()}
        per_model: dict[str, dict[str, TypeOnModel]] = {}
        for name, model in self.models.items():
            snap = model.snapshot
            rows = {}
            for jt in self.job_types.values():
                use = model.usage[jt.name]
                use.roll(snap.minute_window, snap.day_window)
                rows[jt.name] = TypeOnModel(
                    allocated_slots=self._allocated(model, jt),
                    in_flight=use.in_flight,
                    window_used=use.committed[0]
                    if model.limits.tracks_minute or not model.limits.tracks_day
                    else use.committed[2],
                    waiting=len(model.queues[jt.name]),
                    overages=use.overages,
                )
            per_model[name] = rows
        job_types = {
            jt.name: TypeReport(
                current_ratio=jt.ratio,
                initial_ratio=jt.initial_ratio,
                flexible=jt.flexible,
                in_flight=jt.in_flight,
                allocated_slots=sum(per_model[m][jt.name].allocated_slots for m in self.models),
                waiting=sum(per_model[m][jt.name].waiting for m in self.models),
            )
            for jt in self.job_types.values()
        }
        count = max((m.snapshot.instances for m in self.models.values()), default=0)
        return AllocationReport(
            instance_id=self.instance_id,
            instance_count=count,
            pools=pools,
            job_types=job_types,
            model_job_types=per_model,
            memory_capacity_kb=self._memory_kb or 0,
            active_leases=len(self.leases),
        )

    def models_for(self, requested: Iterable[str]) -> list[str]:
        order = list(requested)
        return order if order else self.model_order
