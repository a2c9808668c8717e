"""The lease lifecycle after a grant: expiry timers, Release and ExtendLease."""

from __future__ import annotations

import asyncio
import logging

from ..backend.ledger import LedgerUnavailable, NotRegistered
from ..backend.ledgers import LedgerApi
from ..capacity.leases import Lease
from ..config import Pricing
from ..errors import NotFound, Unavailable
from ..results import ReleaseResult
from ..types import Outcome, ProviderFeedback, Usage
from .local import LocalState
from .membership import Membership

log = logging.getLogger(__name__)


class LeaseLifecycle:
    def __init__(self, local: LocalState, ledger: LedgerApi, membership: Membership) -> None:
        self._local = local
        self._ledger = ledger
        self._membership = membership

    # ----- expiry ----------------------------------------------------------------------------

    def arm_expiry(self, lease: Lease) -> None:
        if lease.timer is not None:
            lease.timer.cancel()
        loop = asyncio.get_running_loop()
        lease.timer = loop.call_at(self._local.clock.loop_time(lease.expires_at_ms), self._on_expiry, lease.lease_id)

    def _on_expiry(self, lease_id: str) -> None:
        self._membership.spawn(self._expire(lease_id))

    async def _expire(self, lease_id: str) -> None:
        local = self._local
        try:
            reply = await self._ledger.expire(lease_id)
        except (LedgerUnavailable, NotRegistered) as e:
            log.warning("cannot expire lease %s yet: %s", lease_id, e)
            lease = local.leases.get(lease_id)
            if lease is not None:
                lease.expires_at_ms = local.clock.now_ms() + local.settings.heartbeat_interval_ms
                self.arm_expiry(lease)
            return
        if reply.status == "extended":
            lease = local.leases.get(lease_id)
            if lease is not None:
                lease.expires_at_ms = reply.expires_at_ms
                self.arm_expiry(lease)
            return
        if reply.status == "expired" and reply.closed is not None:
            closed = reply.closed
            log.info(
                "lease %s expired unreleased; its estimate is settled",
                lease_id,
                extra={"model": closed.model, "lease_id": lease_id, "job_id": closed.job_id},
            )
            model = local.models.get(reply.closed.model)
            if model is not None and reply.snapshot is not None:
                model.apply(reply.snapshot, own=True)
        if reply.closed is not None:
            local.settle_closed(reply.closed)
        else:
            lease = local.leases.pop(lease_id)
            if lease is not None:
                local.lose(lease)

    # ----- Release / ExtendLease -------------------------------------------------------------

    async def release(
        self, lease_id: str, outcome: Outcome, usage: Usage, provider: ProviderFeedback | None = None
    ) -> ReleaseResult:
        local = self._local
        try:
            reply = await self._ledger.release(lease_id, outcome, usage, provider)
        except (LedgerUnavailable, NotRegistered) as e:
            raise Unavailable(f"Redis is unreachable, the release was not recorded: {e}") from None
        if reply.status == "unknown" or reply.closed is None:
            held = local.leases.pop(lease_id)
            if held is not None:
                # Issued here and still open here, yet the ledger has no record: it lost it.
                local.lose(held)
            if lease_id in local.lost_leases:
                raise NotFound(
                    f"lease {lease_id!r} is unknown: the ledger lost it (Redis restarted without its data); "
                    "its usage could not be recorded"
                )
            raise NotFound(f"lease {lease_id!r} is unknown: it was never issued, or closed over an hour ago")
        closed = reply.closed
        mine = closed.owner == local.instance_id
        if closed.expired and reply.status == "closed":
            if mine:
                local.settle_closed(closed)
            raise NotFound(
                f"lease {lease_id!r} expired before it was released (TTL passed or its instance died); "
                "its estimate was settled"
            )
        model = local.models.get(closed.model)
        if reply.status == "released" and model is not None and reply.snapshot is not None:
            local.clock.sync(reply.snapshot.now_ms)
            model.apply(reply.snapshot, own=mine)
            if not mine:
                local.pump(model)
        if mine:
            # Settling wakes the model's waiters too.
            local.settle_closed(closed)
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
        lease = self._local.leases.get(lease_id)
        if lease is not None:
            lease.expires_at_ms = expires_at
            self.arm_expiry(lease)
        return expires_at
