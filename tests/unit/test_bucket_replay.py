"""The replay of a provider's bucket from the ledger's lease records (rllocal/bucket_replay.py)."""

from __future__ import annotations

from rllocal.bucket_replay import Breach, replay
from rlservice.backend.wire import ClosedLease
from rlservice.types import Outcome, Usage

TTL = 60_000
LIMIT = 60_000  # 1 000 tokens a second


def lease(
    n: int, granted_at: int, closed_at: int, estimate: int, used: int, outcome: Outcome = Outcome.SUCCESS
) -> ClosedLease:
    return ClosedLease(
        lease_id=f"A/{n}",
        owner="A",
        model="m",
        job_type="j",
        job_id="",
        minute_window=0,
        day_window=0,
        estimate_tokens=estimate,
        estimate_requests=1,
        expires_at_ms=granted_at + TTL,
        outcome=outcome,
        same_window=True,
        expired=False,
        refunded_tokens=0,
        refunded_requests=0,
        overage_tokens=0,
        overage_requests=0,
        actual=Usage(request_count=1, input_tokens=used),
        closed_at_ms=closed_at,
    )


def test_grants_within_the_bucket_and_its_refill_pass() -> None:
    # The whole bucket at 0 s; 10 000 refilled by 10 s; a release gives 20 000 back at 5 s.
    leases = [
        lease(1, 0, 5000, 40_000, 20_000),
        lease(2, 0, 5000, 20_000, 20_000),
        lease(3, 10_000, 11_000, 30_000, 0),
    ]
    assert replay(leases, TTL, LIMIT, 60_000, requests=False) == []


def test_a_grant_beyond_what_the_bucket_held_is_a_breach() -> None:
    leases = [lease(1, 0, 5000, 60_000, 60_000), lease(2, 1000, 2000, 2000, 0)]
    assert replay(leases, TTL, LIMIT, 60_000, requests=False) == [Breach(1000, "A/2", 2000, 1000.0)]


def test_unknown_usage_gives_nothing_back_and_a_refund_never_passes_the_limit() -> None:
    unknown = [lease(1, 0, 1000, 60_000, 0, Outcome.FAILED_UNKNOWN_USAGE), lease(2, 1000, 1500, 2000, 0)]
    assert [b.lease_id for b in replay(unknown, TTL, LIMIT, 60_000, requests=False)] == ["A/2"]
    # A full bucket stays at its limit: a refund on top of it adds nothing.
    capped = [lease(1, 0, 60_000, 10_000, 0), lease(2, 60_000, 61_000, LIMIT + 1, 0)]
    assert [b.lease_id for b in replay(capped, TTL, LIMIT, 60_000, requests=False)] == ["A/2"]


def test_requests_are_replayed_in_their_own_bucket() -> None:
    leases = [lease(n, 0, 100, 10, 10) for n in range(3)]
    assert [b.lease_id for b in replay(leases, TTL, 2, 60_000, requests=True)] == ["A/2"]
