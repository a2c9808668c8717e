"""The leases an instance issued and still holds open."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ..types import Estimate


@dataclass(slots=True)
class Lease:
    lease_id: str
    job_id: str
    job_type: str
    model: str
    estimate: Estimate
    minute_window: int
    day_window: int
    expires_at_ms: int
    models_tried: tuple[str, ...]
    waited_ms: int
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class LeaseTable:
    def __init__(self) -> None:
        self._by_id: dict[str, Lease] = {}
        self._by_job: dict[str, Lease] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, lease: Lease) -> None:
        self._by_id[lease.lease_id] = lease
        if lease.job_id:
            self._by_job[lease.job_id] = lease

    def get(self, lease_id: str) -> Lease | None:
        return self._by_id.get(lease_id)

    def for_job(self, job_id: str) -> Lease | None:
        return self._by_job.get(job_id)

    def pop(self, lease_id: str) -> Lease | None:
        lease = self._by_id.pop(lease_id, None)
        if lease is not None:
            if self._by_job.get(lease.job_id) is lease:
                del self._by_job[lease.job_id]
            if lease.timer is not None:
                lease.timer.cancel()
        return lease

    def drain(self) -> list[Lease]:
        leases = list(self._by_id.values())
        for lease in leases:
            self.pop(lease.lease_id)
        return leases
