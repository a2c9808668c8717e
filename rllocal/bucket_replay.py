"""A provider's bucket replayed from the ledger's own record of a rolling model's leases (SPEC §12):
the check that the ledger never let through more than such a bucket, with the same limit and
started full, would have accepted for the same calls. Shared by the churn test and `make chaos`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rlservice.backend.wire import ClosedLease
from rlservice.types import Outcome

# Float arithmetic on both sides: the ledger refills at every call, the replay once an event.
_SLACK = 1e-3


@dataclass(frozen=True, slots=True)
class Breach:
    at_ms: int
    lease_id: str
    asked: int
    held: float


def replay(leases: Iterable[ClosedLease], ttl_ms: int, limit: int, period_ms: int, requests: bool) -> list[Breach]:
    """Grants at expiry - ttl_ms (leases never extended), releases when they closed; a grant that
    asked for more than the bucket held then is a breach. Releases at the same millisecond as a grant
    go first, which can only make the replay more lenient than the ledger."""
    events: list[tuple[int, int, ClosedLease]] = []
    for lease in leases:
        events.append((lease.closed_at_ms, 0, lease))
        events.append((lease.expires_at_ms - ttl_ms, 1, lease))
    events.sort(key=lambda e: (e[0], e[1]))
    level, last, breaches = float(limit), None, []
    for at, kind, lease in events:
        if last is not None:
            level = min(limit, level + (at - last) * limit / period_ms)
        last = at
        estimate = lease.estimate_requests if requests else lease.estimate_tokens
        if kind == 1:
            if estimate > level + _SLACK:
                breaches.append(Breach(at, lease.lease_id, estimate, level))
            level -= estimate
        elif lease.outcome is not Outcome.FAILED_UNKNOWN_USAGE and not lease.expired:
            actual = lease.actual.request_count if requests else lease.actual.tokens
            level = min(limit, level + estimate - actual)
    return breaches
