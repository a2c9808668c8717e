"""Rolling windows (SPEC §12): a bucket refilled continuously at limit / period on Redis time, where a
fixed window gives a whole fresh minute at each boundary."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import grpc
import pytest

from rllocal.bucket_replay import replay
from rlproto import ratelimit_pb2 as pb

from .harness import Harness, eventually

ROLLING, FIXED = "model-rolling", "model-fixed"
TPM, ESTIMATE = 120_000, 10_000
REFILL_PER_S = TPM / 60
NO_WAIT = {"job_types": {"job": {"max_wait_ms": {ROLLING: 0, FIXED: 0}}}}


def redis_now_s(harness: Harness) -> float:
    seconds, micros = harness.redis().time()
    return int(seconds) + int(micros) / 1e6


async def fill(harness: Harness, port: int, model: str) -> int:
    """Acquires on the model until it refuses, releasing each job at its whole estimate; returns how
    many it granted."""
    granted = 0
    while True:
        try:
            lease = await harness.acquire(port, "job", models=[model])
        except grpc.aio.AioRpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.details()
            return granted
        granted += 1
        await harness.release(port, lease.lease_id, actual=pb.Usage(request_count=1, input_tokens=ESTIMATE))


async def test_an_empty_bucket_makes_a_job_wait_the_refill_time_of_its_estimate(harness: Harness) -> None:
    waits = {"job_types": {"job": {"max_wait_ms": {ROLLING: 30_000}}}}
    port = harness.boot_instance(0, "rolling", {**NO_WAIT, **waits}).port
    # A full bucket gives its whole limit at once.
    leases = [await harness.acquire(port, "job", models=[ROLLING]) for _ in range(TPM // ESTIMATE)]
    for lease in leases:
        await harness.release(port, lease.lease_id, actual=pb.Usage(request_count=1, input_tokens=ESTIMATE))
    emptied = redis_now_s(harness)
    # What the filling took has come back already; the rest of one estimate takes its refill time.
    job = await harness.acquire(port, "job", models=[ROLLING], timeout=60, lease_ttl_ms=60_000)
    granted_at = (job.lease_expires_at_ms - 60_000) / 1000
    assert granted_at - emptied >= ESTIMATE / REFILL_PER_S - (emptied - first_grant_s(leases)) - 0.05
    assert job.waited_ms >= 0.5 * 1000 * ESTIMATE / REFILL_PER_S
    assert granted_at - emptied <= ESTIMATE / REFILL_PER_S + 3


def first_grant_s(leases: list[pb.AcquireResponse]) -> float:
    """When the first of these leases was granted, from its expiry and the default TTL."""
    return (leases[0].lease_expires_at_ms - 300_000) / 1000


async def test_across_a_minute_boundary_rolling_grants_only_the_refill_and_fixed_a_fresh_window(
    harness: Harness,
) -> None:
    port = harness.boot_instance(0, "rolling", NO_WAIT).port
    # Filled in the second half of a minute, the rolling bucket has refilled less than half of its
    # limit by the boundary.
    now = redis_now_s(harness)
    if now % 60 < 30:
        await asyncio.sleep(30 - now % 60)
    assert await fill(harness, port, FIXED) == TPM // ESTIMATE
    assert await fill(harness, port, ROLLING) >= TPM // ESTIMATE
    filled = redis_now_s(harness)
    await asyncio.sleep(60 - filled % 60 + 0.2)
    after = await fill(harness, port, FIXED)
    rolled = await fill(harness, port, ROLLING)
    # Measured once the bucket's grants are over: what refilled until then bounds them.
    elapsed = redis_now_s(harness) - filled
    # The fixed window starts afresh: its whole limit again.
    assert after == TPM // ESTIMATE
    # The rolling bucket holds only what it held when it refused (less than one estimate) and what
    # refilled since.
    assert rolled <= (ESTIMATE + REFILL_PER_S * elapsed) // ESTIMATE
    assert rolled < TPM // ESTIMATE // 2 + 1


CHURN_TTL_MS = 60_000
CHURN_TPM, CHURN_RPM = 600_000, 90
CHURN = {
    "heartbeat_interval_ms": 300,
    "stale_after_ms": 1200,
    "models": {ROLLING: {"tokens_per_minute": CHURN_TPM, "requests_per_minute": CHURN_RPM}},
    "job_types": {"job": {"max_wait_ms": {ROLLING: 300}}},
}


async def churn_client(harness: Harness, ports: list[int], rng: random.Random, until: float) -> None:
    """Acquires and releases on the rolling model, on whichever instance is up, until `until`."""
    while time.monotonic() < until:
        port = rng.choice(ports)
        try:
            lease = await harness.acquire(port, "job", models=[ROLLING], timeout=5, lease_ttl_ms=CHURN_TTL_MS)
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.05)
            continue
        await asyncio.sleep(rng.uniform(0, 0.3))
        roll = rng.random()
        outcome = pb.FAILED_UNKNOWN_USAGE if roll < 0.1 else pb.SUCCESS
        used = pb.Usage(request_count=1, input_tokens=int(ESTIMATE * rng.uniform(0.2, 1.3)))
        with contextlib.suppress(grpc.aio.AioRpcError):
            await harness.release(port, lease.lease_id, outcome, used)


@pytest.mark.ledgers
async def test_under_churn_the_ledger_lets_through_no_more_than_a_provider_bucket(harness: Harness) -> None:
    """Three instances, one killed and one started under load: replayed from the ledger's own record
    of every lease, a bucket with the same limits, started full, never had less than a grant took."""
    ports = [harness.boot_instance(0, "rolling", CHURN).port for _ in range(3)]
    live = list(ports)
    # One lease the instance to be killed surely holds: its removal closes it at its estimate.
    await harness.acquire(live[0], "job", models=[ROLLING], lease_ttl_ms=CHURN_TTL_MS)
    rng = random.Random(7)
    until = time.monotonic() + 10
    clients = [
        asyncio.ensure_future(churn_client(harness, live, random.Random(rng.random()), until)) for _ in range(24)
    ]
    await asyncio.sleep(3)
    harness.kill_instance(live.pop(0))
    live.append(harness.boot_instance(0, "rolling", CHURN).port)
    await asyncio.gather(*clients)
    ledger = harness.ledger()
    await eventually(lambda: _true(not ledger.open_leases()), timeout=20, what="every lease closed")
    leases = ledger.closed_leases(ROLLING)
    # The buckets bound the run, not the clients: the token bucket's 60 jobs and then the requests.
    assert len(leases) > 60
    assert sum(lease.expired for lease in leases) > 0, "the killed instance held leases"
    assert replay(leases, CHURN_TTL_MS, CHURN_TPM, 60_000, requests=False) == []
    assert replay(leases, CHURN_TTL_MS, CHURN_RPM, 60_000, requests=True) == []


async def _true(value: bool) -> bool:
    return value


async def job_told(harness: Harness, port: int, remaining_tokens: int) -> pb.ReleaseResponse:
    """One job on the rolling model, released at its whole estimate with what the provider said
    remains of the key's tokens."""
    lease = await harness.acquire(port, "job", models=[ROLLING])
    return await harness.release(
        port,
        lease.lease_id,
        actual=pb.Usage(request_count=1, input_tokens=ESTIMATE),
        provider=pb.ProviderFeedback(remaining_tokens=remaining_tokens),
    )


async def test_a_providers_remaining_below_the_buckets_leaves_a_reserve_of_the_tolerance(harness: Harness) -> None:
    port = harness.boot_instance(0, "rolling", NO_WAIT).port
    tolerance = ESTIMATE  # the default: the largest estimate
    # While the job is open the bucket cannot refill past limit - open, so at its release the ledger
    # holds exactly TPM - ESTIMATE, whenever the release comes.
    reply = await job_told(harness, port, TPM - ESTIMATE - 2000)
    # A gap within the tolerance is charged on a rolling bucket, with the tolerance on top of it:
    # the ledger goes that far below the provider's level.
    assert reply.external_tokens == 2000 + tolerance
    level = TPM - ESTIMATE - 2000 - tolerance
    # The provider saw this job too, and its level stays the tolerance above the ledger's (which has
    # refilled by less than that within 5 s): nothing more is charged.
    reply = await job_told(harness, port, level - ESTIMATE + tolerance)
    assert reply.external_tokens == 0


async def test_a_rolling_bucket_learns_an_outside_rate_and_gives_back_only_what_the_rate_took(
    harness: Harness,
) -> None:
    port = harness.boot_instance(0, "rolling", NO_WAIT).port
    tolerance, tau_ms = ESTIMATE, 20_000  # the defaults
    bucket = harness.key(ROLLING, "w", ROLLING, "m", "r")
    reply = await job_told(harness, port, TPM - ESTIMATE - 2000)
    assert reply.external_tokens == 2000 + tolerance
    # The charge is read as a rate: 12 000 tokens / 20 s (the first answer: no silence before it),
    # 36 000 tokens a minute that the bucket no longer refills.
    rate, since = (float(v or 0) for v in harness.redis().hmget(bucket, "vt", "va"))
    assert rate == (2000 + tolerance) * 60_000 / tau_ms == 36_000
    pools = (await harness.allocation(port)).allocation.pools
    assert (pools[ROLLING].outside_tokens_per_minute, pools[FIXED].outside_tokens_per_minute) == (36_000, 0)
    # Two seconds on, a provider with its bucket full is far above the ledger's level (by more
    # than twice the tolerance): the bucket gets back what the rate took in the meantime (t), and
    # the rate slows by as much over (20 s + t).
    await eventually(lambda: _true(redis_now_s(harness) * 1000 >= since + 2000), what="two seconds of Redis time")
    reply = await job_told(harness, port, TPM)
    after_ms = redis_now_s(harness) * 1000
    assert reply.external_tokens == 0
    slower = float(harness.redis().hget(bucket, "vt") or 0)
    least, most = 2000, after_ms - since
    assert (rate * least // 60_000) * 60_000 / (tau_ms + most) <= rate - slower
    assert rate - slower <= (rate * most / 60_000) * 60_000 / (tau_ms + least)
