"""One instance: joins the Redis ledger and the local job-type logic. Each flow lives in its own
module under instance/: membership (registration, heartbeats, events), admission (Acquire), the
lease lifecycle (Release, ExtendLease, expiry) and the report (GetAllocation)."""

from __future__ import annotations

from collections.abc import Iterable

from .backend.ledger import LedgerUnavailable
from .backend.ledgers import LedgerApi
from .backend.wire import Event
from .config import Settings
from .errors import Unavailable
from .instance.admission import Admission
from .instance.lifecycle import LeaseLifecycle
from .instance.local import LocalState
from .instance.membership import Membership
from .instance.report import allocation
from .results import AllocationReport, Grant, ReleaseResult
from .types import Outcome, ProviderFeedback, Usage


class Limiter:
    def __init__(
        self, settings: Settings, ledger: LedgerApi, memory_capacity_kb: int | None, lease_id_entropy: int = 12
    ) -> None:
        self.settings = settings
        self.instance_id = ledger.instance_id
        self.local = LocalState(settings, ledger.instance_id, memory_capacity_kb)
        self.job_types = self.local.job_types
        self.models = self.local.models
        self.model_order = self.local.model_order
        self.leases = self.local.leases
        self.changes = self.local.changes
        self._ledger = ledger
        self.membership = Membership(self.local, ledger)
        self._lifecycle = LeaseLifecycle(self.local, ledger, self.membership)
        self._admission = Admission(self.local, ledger, self.membership, self._lifecycle, lease_id_entropy)

    @property
    def registered(self) -> bool:
        return self.membership.registered

    async def start(self) -> None:
        await self.membership.start()

    async def close(self) -> None:
        await self.membership.close()

    async def heartbeat(self) -> None:
        await self.membership.heartbeat()

    def on_event(self, event: Event) -> None:
        self.membership.on_event(event)

    async def resubscribed(self) -> None:
        await self.membership.refresh()

    async def acquire(
        self, job_id: str, job_type: str, models: list[str], ttl_ms: int, time_left_s: float | None
    ) -> Grant:
        return await self._admission.acquire(job_id, job_type, models, ttl_ms, time_left_s)

    async def release(
        self, lease_id: str, outcome: Outcome, usage: Usage, provider: ProviderFeedback | None = None
    ) -> ReleaseResult:
        return await self._lifecycle.release(lease_id, outcome, usage, provider)

    async def extend(self, lease_id: str, ttl_ms: int) -> int:
        return await self._lifecycle.extend(lease_id, ttl_ms)

    async def lease_use(self, lease_id: str) -> tuple[str, str] | None:
        """(job type, model) of a lease, from this instance's table or else the ledger; None when unknown."""
        lease = self.leases.get(lease_id)
        if lease is not None:
            return lease.job_type, lease.model
        try:
            return await self._ledger.lease_use(lease_id)
        except LedgerUnavailable as e:
            raise Unavailable(f"Redis is unreachable, the lease's job type cannot be checked: {e}") from None

    def rebalance(self) -> bool:
        return self.local.rebalance()

    def allocation(self) -> AllocationReport:
        return allocation(self.local)

    def models_for(self, requested: Iterable[str]) -> list[str]:
        order = list(requested)
        return order if order else self.model_order
