"""The seed's distributed model (SPEC §5): pools follow settled usage, admission checks both the
instance's share and the global cap, and lending lets a busy instance use what idle ones leave.

Model scale-model: TPM 100 000 (unless said), scaleJob estimates 10 000 tokens."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from rlproto import ratelimit_pb2 as pb

from .harness import Harness, Process, eventually

pytestmark = pytest.mark.ledgers

MODEL = "scale-model"
NO_WAIT = {"job_types": {"scaleJob": {"max_wait_ms": {MODEL: 0}}}}
LENDING = {"lend_idle_capacity": True}


def tokens(n: int) -> pb.Usage:
    return pb.Usage(request_count=1, input_tokens=n)


async def pool_is(harness: Harness, procs: list[Process], tpm: int, slots: int | None = None) -> bool:
    for p in procs:
        pool = (await harness.allocation(p.port)).allocation.pools[MODEL]
        if pool.tokens_per_minute != tpm or (slots is not None and pool.total_slots != slots):
            return False
    return True


async def expect_pools(harness: Harness, procs: list[Process], tpm: int, slots: int | None = None) -> None:
    await eventually(lambda: pool_is(harness, procs, tpm, slots), what=f"pools of {tpm} TPM / {slots} slots")


async def run_jobs(harness: Harness, port: int, count: int, actual: int) -> None:
    for _ in range(count):
        result = await harness.run_job(port, "scaleJob", actual=tokens(actual))
        assert result.granted, result.details


async def refused(harness: Harness, port: int) -> bool:
    try:
        lease = await harness.acquire(port, "scaleJob")
    except grpc.aio.AioRpcError as e:
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        return True
    await harness.release(port, lease.lease_id, actual=tokens(0))
    return False


async def queued(harness: Harness, port: int) -> bool:
    alloc = await harness.allocation(port)
    return alloc.model_job_types[MODEL].job_types["scaleJob"].waiting == 1


def boot(harness: Harness, count: int, overrides: dict[str, Any] | None = None) -> list[Process]:
    return [harness.boot_instance(0, "instanceScaling", overrides) for _ in range(count)]


# ----- reported pools -----------------------------------------------------------------------


async def test_usage_on_one_instance_moves_every_pool_by_half(harness: Harness) -> None:
    await harness.within_one_window(20)
    a, b = boot(harness, 2)
    await expect_pools(harness, [a, b], 50_000, 5)
    await run_jobs(harness, a.port, 1, 10_000)
    await expect_pools(harness, [a, b], 45_000, 4)
    await run_jobs(harness, a.port, 5, 10_000)
    await expect_pools(harness, [a, b], 20_000, 2)


async def test_an_open_lease_moves_no_pool(harness: Harness) -> None:
    await harness.within_one_window(20)
    a, b = boot(harness, 2)
    await expect_pools(harness, [a, b], 50_000, 5)
    lease = await harness.acquire(a.port, "scaleJob")
    assert await pool_is(harness, [a, b], 50_000, 5)
    await harness.release(a.port, lease.lease_id, actual=tokens(4_000))
    await expect_pools(harness, [a, b], 48_000, 4)


async def test_jobs_above_their_estimate_shrink_the_other_pool(harness: Harness) -> None:
    await harness.within_one_window(20)
    a, b = boot(harness, 2)
    await expect_pools(harness, [a, b], 50_000)
    await run_jobs(harness, a.port, 5, 15_000)
    await expect_pools(harness, [b], 12_500, 1)


async def test_jobs_below_their_estimate_leave_more(harness: Harness) -> None:
    await harness.within_one_window(20)
    a, b = boot(harness, 2)
    await expect_pools(harness, [a, b], 50_000)
    await run_jobs(harness, a.port, 5, 5_000)
    await expect_pools(harness, [a, b], 37_500, 3)


async def test_three_instances_share_what_is_left(harness: Harness) -> None:
    await harness.within_one_window(20)
    procs = boot(harness, 3, {"models": {MODEL: {"tokens_per_minute": 90_000}}})
    await expect_pools(harness, procs, 30_000, 3)
    await run_jobs(harness, procs[0].port, 3, 15_000)
    await expect_pools(harness, procs, 15_000, 1)


async def test_overages_one_after_another_until_a_job_no_longer_fits(harness: Harness) -> None:
    await harness.within_one_window(30)
    a, b = boot(harness, 2)
    await expect_pools(harness, [a, b], 50_000)
    for expected in (44_000, 38_000, 32_000, 26_000, 20_000, 14_000, 8_000):
        await run_jobs(harness, a.port, 1, 12_000)
        await expect_pools(harness, [a, b], expected)
    # 8 000 per instance left: a 10 000-token job waits for the next window.
    waiting = asyncio.ensure_future(harness.acquire(a.port, "scaleJob"))
    await eventually(lambda: queued(harness, a.port), what="the job to wait")
    assert not waiting.done()
    waiting.cancel()


async def test_twenty_thousand_used_leaves_four_slots_each(harness: Harness) -> None:
    await harness.within_one_window(20)
    a, b = boot(harness, 2)
    await expect_pools(harness, [a, b], 50_000)
    await run_jobs(harness, b.port, 2, 10_000)
    await expect_pools(harness, [a, b], 40_000, 4)


async def test_a_used_up_window_leaves_nothing_and_a_new_job_queues(harness: Harness) -> None:
    await harness.within_one_window(20)
    a, b = boot(harness, 2)
    await expect_pools(harness, [a, b], 50_000)
    held = [(p, await harness.acquire(p.port, "scaleJob")) for p in (a, b) for _ in range(5)]
    for p, lease in held:
        await harness.release(p.port, lease.lease_id, actual=tokens(10_000))
    await expect_pools(harness, [a, b], 0, 0)
    waiting = asyncio.ensure_future(harness.acquire(b.port, "scaleJob"))
    await eventually(lambda: queued(harness, b.port), what="the job to queue")
    waiting.cancel()


# ----- admission: the share and the global cap ----------------------------------------------


async def test_the_global_cap_stops_what_the_seed_formula_alone_would_admit(harness: Harness) -> None:
    await harness.within_one_window(20)
    a, b = boot(harness, 2, NO_WAIT)
    held_a = [await harness.acquire(a.port, "scaleJob") for _ in range(5)]
    held_b = [await harness.acquire(b.port, "scaleJob") for _ in range(5)]
    for lease in held_a:
        await harness.release(a.port, lease.lease_id, actual=tokens(10_000))
    await expect_pools(harness, [a, b], 25_000, 2)
    # B's five open leases still hold the other 50 000: A's pool reads 25 000, yet nothing fits.
    assert await refused(harness, a.port)
    await harness.release(b.port, held_b[0].lease_id, actual=tokens(0))
    await eventually(lambda: _not(refused(harness, a.port)), what="a grant once B's lease closed")


async def _not(check: Any) -> bool:
    return not await check


# ----- lending ------------------------------------------------------------------------------


async def test_without_lending_one_busy_instance_gets_its_share(harness: Harness) -> None:
    await harness.within_one_window(20)
    a, _ = boot(harness, 2, NO_WAIT)
    grants = [await harness.acquire(a.port, "scaleJob") for _ in range(5)]
    assert len(grants) == 5
    assert await refused(harness, a.port)


async def test_with_lending_one_busy_instance_can_use_the_whole_window(harness: Harness) -> None:
    await harness.within_one_window(20)
    a, b = boot(harness, 2, {**NO_WAIT, **LENDING})
    grants = [await harness.acquire(a.port, "scaleJob") for _ in range(10)]
    assert len({g.lease_id for g in grants}) == 10
    assert await refused(harness, a.port)
    assert await refused(harness, b.port)
    # The reported pools stay the seed's.
    assert await pool_is(harness, [a, b], 50_000, 5)


async def test_lending_stops_as_soon_as_another_instance_waits(harness: Harness) -> None:
    await harness.within_one_window(20)
    overrides = {"lend_idle_capacity": True, "job_types": {"scaleJob": {"max_wait_ms": {MODEL: 30_000}}}}
    a, b = boot(harness, 2, overrides)
    held = [await harness.acquire(a.port, "scaleJob") for _ in range(10)]
    waiting_b = asyncio.ensure_future(harness.acquire(b.port, "scaleJob"))
    await eventually(lambda: queued(harness, b.port), what="B to wait")
    # A is above its share while B waits: it takes no more, and what A frees goes to B.
    a_more = asyncio.ensure_future(harness.acquire(a.port, "scaleJob"))
    await eventually(lambda: queued(harness, a.port), what="A's next job to wait")
    await harness.release(a.port, held[0].lease_id, actual=tokens(0))
    granted = await asyncio.wait_for(waiting_b, 20)
    assert granted.instance_id == b.instance_id
    assert not a_more.done()
    a_more.cancel()
