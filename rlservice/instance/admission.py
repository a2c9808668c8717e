"""The Acquire flow: a local reservation against the job type's share, one ledger call that checks
the instance's share and the global cap, the FIFO wait per model and job type, and escalation."""

from __future__ import annotations

import asyncio
import logging
import secrets

from ..backend.ledger import (
    AcquireCall,
    AcquireReply,
    LedgerUnavailable,
    ModelLedgerUnavailable,
    NotRegistered,
    OpenLease,
)
from ..backend.ledgers import LedgerApi
from ..capacity.leases import Lease
from ..capacity.state import JobType, ModelState, Reservation
from ..capacity.waiting import QueueFull, Waiter, WaitPlaces
from ..capacity.windows import default_wait_ms
from ..errors import DeadlineExceeded, Exhausted, ModelUnavailable, Unavailable
from ..results import Grant
from ..types import Outcome, Usage
from .lifecycle import LeaseLifecycle
from .local import LocalState
from .membership import Membership

log = logging.getLogger(__name__)

_REVOKE_RETRY_S = 1.0


def queue_full(places: WaitPlaces) -> Exhausted:
    return Exhausted(
        f"the wait queue of this instance is full: {places.taken} Acquire requests are waiting, the most "
        f"max_waiters ({places.limit}) allows; retry later or on another instance, or raise max_waiters "
        "in the configuration (docs/operations.md sizes it)"
    )


def grant_of(lease: Lease, instance_id: str) -> Grant:
    return Grant(
        lease_id=lease.lease_id,
        model=lease.model,
        models_tried=lease.models_tried,
        tokens=lease.estimate.tokens,
        requests=lease.estimate.requests,
        waited_ms=lease.waited_ms,
        expires_at_ms=lease.expires_at_ms,
        instance_id=instance_id,
    )


class Admission:
    def __init__(
        self, local: LocalState, ledger: LedgerApi, membership: Membership, leases: LeaseLifecycle, entropy: int
    ) -> None:
        self._local = local
        self._ledger = ledger
        self._membership = membership
        self._leases = leases
        self._entropy = entropy
        self._acquiring: dict[str, asyncio.Future[Grant]] = {}

    async def acquire(
        self, job_id: str, job_type: str, models: list[str], ttl_ms: int, time_left_s: float | None
    ) -> Grant:
        local = self._local
        lease = local.leases.for_job(job_id)
        if lease is not None:
            return grant_of(lease, local.instance_id)
        while (running := self._acquiring.get(job_id)) is not None:
            log.info("Acquire of job %s joins the attempt already in progress", job_id)
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                # Either this caller was cancelled, or the one it joined was: then try on its own.
                if not running.cancelled():
                    raise
        if not self._membership.registered:
            raise Unavailable("this instance is not registered with Redis yet; try again or another instance")
        future: asyncio.Future[Grant] = asyncio.get_running_loop().create_future()
        self._acquiring[job_id] = future
        try:
            grant = await self._escalate(job_id, local.job_types[job_type], models, ttl_ms, time_left_s)
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

    async def _escalate(
        self, job_id: str, jt: JobType, models: list[str], ttl_ms: int, time_left_s: float | None
    ) -> Grant:
        """Tries the models in order, each up to the job type's wait for it."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = None if time_left_s is None else started + time_left_s
        tried: list[str] = []
        down: list[str] = []
        reason = ""
        queued = False
        for name in models:
            tried.append(name)
            wait_ms = jt.max_wait_ms.get(name)
            if wait_ms is None:
                wait_ms = default_wait_ms(self._local.clock.now_ms())
            until = loop.time() + wait_ms / 1000
            capped = deadline is not None and deadline <= until
            if capped and deadline is not None:
                until = deadline
            try:
                got, waited = await self._on_model(self._local.models[name], jt, job_id, ttl_ms, until, len(tried) == 1)
            except ModelUnavailable as e:
                # A shard down fails its models only: the next model may be on one that answers.
                down.append(name)
                reason = str(e)
                continue
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
                return grant_of(got, self._local.instance_id)
            if capped:
                raise DeadlineExceeded(f"the deadline ended the wait for capacity after trying {', '.join(tried)}")
        if down:
            # Those models might have had capacity: worth a retry, unlike an exhaustion.
            if len(down) == len(tried):
                raise ModelUnavailable(
                    reason if len(down) == 1 else f"the Redis shards of {', '.join(down)} are unreachable: {reason}"
                )
            raise ModelUnavailable(
                f"no capacity for job type {jt.name!r}: {', '.join(m for m in tried if m not in down)} had none "
                f"within its wait, and the Redis shard of {', '.join(down)} is unreachable; retry"
            )
        raise Exhausted(
            f"all models exhausted for job type {jt.name!r}: tried {', '.join(tried)} "
            "and none had capacity within its wait"
        )

    async def _on_model(
        self, model: ModelState, jt: JobType, job_id: str, ttl_ms: int, until: float, first: bool
    ) -> tuple[Lease | OpenLease | None, bool]:
        """Waits in the model's FIFO queue for the job type until `until` (loop time). Returns the
        lease (or None when the wait ended) and whether it had to queue."""
        local = self._local
        loop = asyncio.get_running_loop()
        queue = model.queues[jt.name]
        res = local.reserve(model, jt) if not len(queue) else None
        if res is None and local.wait_places.full:
            # Refused before the look at the ledger: a full queue costs Redis nothing.
            raise queue_full(local.wait_places)
        if res is None and first:
            # One look at the ledger even when waiting: another instance may hold this job's lease.
            reply = await self._call_ledger(model, jt, job_id, "", ttl_ms, peek=True)
            if reply.existing is not None:
                return reply.existing, False
            model.apply(reply.snapshot, own=True)
            res = local.reserve(model, jt) if not len(queue) else None
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
                    try:
                        waiter = queue.join()
                    except QueueFull:
                        raise queue_full(local.wait_places) from None
                    recording = self._membership.waiters_changed(model)
                    local.changes.notify()
                    if recording is not None and local.lend:
                        # Borrowing beyond the share needs this instance's waiters on record: one
                        # ledger call, even when no wait is allowed. Recording it pumps the queue.
                        await asyncio.shield(recording)
                        if waiter.woken:
                            res, taken = waiter.future.result(), True
                            continue
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
                    local.unreserve(model, jt, waiter.future.result())
                self._membership.waiters_changed(model)
                local.pump(model)

    async def _call_ledger(
        self, model: ModelState, jt: JobType, job_id: str, lease_id: str, ttl_ms: int, peek: bool
    ) -> AcquireReply:
        try:
            reply = await self._ledger.acquire(
                AcquireCall(
                    model.name,
                    job_id,
                    jt.name,
                    lease_id,
                    jt.estimate,
                    ttl_ms,
                    self._local.lend,
                    peek,
                    token_kinds=model.limits.token_kinds,
                )
            )
        except NotRegistered:
            self._membership.reregister()
            raise Unavailable(
                "this instance had been declared stale by the ledger and is registering again; retry"
            ) from None
        except ModelLedgerUnavailable as e:
            raise ModelUnavailable(f"the Redis shard of model {model.name!r} is unreachable: {e}") from None
        except LedgerUnavailable as e:
            raise Unavailable(f"Redis is unreachable, no capacity can be granted: {e}") from None
        self._local.clock.sync(reply.snapshot.now_ms)
        return reply

    async def _attempt(
        self, model: ModelState, jt: JobType, res: Reservation, job_id: str, ttl_ms: int
    ) -> Lease | OpenLease | None:
        token = secrets.token_urlsafe(self._entropy)
        lease_id = f"{self._local.instance_id}/{token}{self._ledger.lease_suffix(model.name)}"
        try:
            reply = await self._call_ledger(model, jt, job_id, lease_id, ttl_ms, peek=False)
        except BaseException as e:
            self._local.unreserve(model, jt, res)
            self._local.pump(model)
            if isinstance(e, asyncio.CancelledError | Unavailable):
                # The caller left, or Redis failed, while the script was on its way: it may have
                # granted the lease.
                self._membership.spawn(self._revoke(lease_id))
            raise
        return self._settle(model, jt, res, job_id, lease_id, reply)

    def _settle(
        self, model: ModelState, jt: JobType, res: Reservation, job_id: str, lease_id: str, reply: AcquireReply
    ) -> Lease | OpenLease | None:
        local = self._local
        model.pending = model.pending.add(jt.estimate, -1)
        model.apply(reply.snapshot, own=True)
        if reply.status != "granted":
            local.unreserve(model, jt, res, pending=False)
            if reply.existing is not None:
                local.pump(model)
            return reply.existing
        snap = reply.snapshot
        if (snap.minute_window, snap.day_window) != (res.minute_window, res.day_window):
            use = model.usage[jt.name]
            use.charge(res.minute_window, res.day_window, jt.estimate, -1)
            use.charge(snap.minute_window, snap.day_window, jt.estimate)
        lease = Lease(
            lease_id=lease_id,
            job_id=job_id,
            job_type=jt.name,
            model=model.name,
            estimate=jt.estimate,
            minute_window=snap.minute_window,
            day_window=snap.day_window,
            expires_at_ms=reply.expires_at_ms,
            models_tried=(),
            waited_ms=0,
        )
        local.leases.add(lease)
        self._leases.arm_expiry(lease)
        # The reservation was signalled before the lease was on record; the live view counts it now.
        local.changes.notify()
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
                model = self._local.models.get(reply.closed.model) if reply.closed else None
                if model is not None and reply.snapshot is not None:
                    model.apply(reply.snapshot, own=True)
                    self._local.pump(model)
                return
