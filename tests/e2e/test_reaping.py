"""Removing a dead instance: one bounded batch of its leases a call, its capacity committed and N
unchanged until the last lease is closed, and the survivors finish the removal by themselves."""

from __future__ import annotations

import asyncio
import math

import pytest

from rlservice.backend.ledger import Ledger

from .harness import Harness, eventually

pytestmark = pytest.mark.ledgers

MODEL = "tpm-model"
ESTIMATE = 10_000  # the "work" job type's estimated tokens in the expiry preset
BATCH = 32
LEASES = 2 * BATCH + 88
# Plenty of capacity, leases that outlive the test (no sweep interferes), quick staleness.
ROOMY = {
    "models": {MODEL: {"tokens_per_minute": 10**12}},
    "escalation_order": [MODEL],
    "lease_ttl_ms": 600_000,
}


def instances_key(harness: Harness) -> str:
    return harness.key(MODEL, "instances")


def index_key(harness: Harness, instance_id: str) -> str:
    return harness.key(MODEL, "lx", instance_id)


async def open_leases(harness: Harness, port: int, count: int) -> None:
    gate = asyncio.Semaphore(64)

    async def one() -> None:
        async with gate:
            await harness.acquire(port, "work")

    await asyncio.gather(*(one() for _ in range(count)))


def committed(harness: Harness) -> tuple[int, int]:
    """Settled and open tokens over the model's minute windows."""
    client = harness.redis()
    settled = opened = 0
    for key in client.scan_iter(match=harness.key(MODEL, "w", MODEL, "m", "*")):
        fields = client.hmget(key, "st", "ot")
        settled += int(fields[0] or 0)
        opened += int(fields[1] or 0)
    return settled, opened


def in_flight(harness: Harness) -> dict[str, int]:
    return harness.in_flight(MODEL)


async def test_each_reaping_call_closes_at_most_one_batch_and_reaping_finishes(harness: Harness) -> None:
    # One minute window holds the whole test, so open and settled totals are the same window's.
    await harness.within_one_window(20)
    dead = harness.boot_instance(0, "expiry", ROOMY)
    await open_leases(harness, dead.port, LEASES)
    client = harness.redis()
    assert client.zcard(index_key(harness, dead.instance_id)) == LEASES
    assert committed(harness) == (0, LEASES * ESTIMATE)
    assert in_flight(harness)["_"] == LEASES
    harness.kill_instance(dead.port)

    stale_ms = 1000
    redis = harness.async_redis()
    try:
        ledger = Ledger(redis, harness.ledger_prefix(MODEL), "reaper", stale_ms)
        await ledger.load()

        async def stale() -> bool:
            secs, micros = client.time()
            score = client.zscore(instances_key(harness), dead.instance_id)
            return score is not None and score < secs * 1000 + micros // 1000 - stale_ms

        await eventually(stale, timeout=10, what="the killed instance to go stale")
        left, calls = LEASES, 0
        while client.zscore(instances_key(harness), dead.instance_id) is not None:
            more = await ledger.reap()
            calls += 1
            now_left = client.zcard(index_key(harness, dead.instance_id))
            closed = left - now_left
            assert 0 < closed <= BATCH, f"call {calls} closed {closed} leases"
            left = now_left
            settled, opened = committed(harness)
            assert settled + opened == LEASES * ESTIMATE, "a half-removed instance's capacity stays committed"
            assert opened == left * ESTIMATE
            assert in_flight(harness)["_"] == left
            if left:
                assert more
                assert client.zcard(instances_key(harness)) == 1, "N drops only once the instance is gone"
                assert client.zscore(instances_key(harness), dead.instance_id) == 0
            assert calls <= math.ceil(LEASES / BATCH)
        assert not more
        assert calls == math.ceil(LEASES / BATCH)
        assert client.zcard(instances_key(harness)) == 0
        assert client.zcard(index_key(harness, dead.instance_id)) == 0
        assert committed(harness) == (LEASES * ESTIMATE, 0)
        assert in_flight(harness) == {"_": 0}
        assert not await ledger.reap()
    finally:
        await redis.aclose()


async def test_a_survivor_finishes_the_removal_by_itself(harness: Harness) -> None:
    survivor = harness.boot_instance(0, "expiry", ROOMY)
    dead = harness.boot_instance(0, "expiry", ROOMY)
    await eventually(lambda: harness.counts_instances(survivor.port, 2), what="the survivor to see two instances")
    own = 3
    await open_leases(harness, survivor.port, own)
    await open_leases(harness, dead.port, LEASES)
    client = harness.redis()
    assert client.zcard(index_key(harness, dead.instance_id)) == LEASES
    harness.kill_instance(dead.port)

    async def removed() -> bool:
        alone = await harness.counts_instances(survivor.port, 1)
        return (
            alone
            and client.zcard(instances_key(harness)) == 1
            and in_flight(harness) == {"_": own, survivor.instance_id: own}
        )

    await eventually(removed, timeout=30, what="the survivor to remove the killed instance")
    assert client.zcard(index_key(harness, dead.instance_id)) == 0
    assert client.zcard(index_key(harness, survivor.instance_id)) == own
    assert client.zscore(instances_key(harness), survivor.instance_id) != 0
