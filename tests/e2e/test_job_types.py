"""Job types sharing an instance's pool (SPEC §6): ratios, fixed isolation, local rebalancing."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from rlproto import ratelimit_pb2 as pb

from .harness import Harness, eventually

FAST_REBALANCE = {"ratio_adjustment": {"adjustment_interval_ms": 200}}


def slots_of(alloc: pb.GetAllocationResponse, model: str) -> dict[str, int]:
    return {name: s.allocated_slots for name, s in alloc.model_job_types[model].job_types.items()}


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("ratio64", {"big": 6, "small": 4}),
        ("ratio532", {"first": 50, "second": 30, "third": 20}),
        ("ratio333", {"first": 3, "second": 3, "third": 3}),
        ("fixedRatio", {"fixedJobType": 4, "flexibleJobTypeA": 3, "flexibleJobTypeB": 3}),
    ],
)
async def test_local_ratio_distribution(harness: Harness, preset: str, expected: dict[str, int]) -> None:
    port = harness.boot_instance(0, preset).port
    alloc = await harness.allocation(port)
    model = next(iter(alloc.model_job_types))
    assert slots_of(alloc, model) == expected
    assert {n: s.allocated_slots for n, s in alloc.job_types.items()} == expected


async def test_each_type_can_fill_exactly_its_share(harness: Harness) -> None:
    no_wait = {"job_types": {t: {"max_wait_ms": {"ratio-model": 0}} for t in ("big", "small")}}
    port = harness.boot_instance(0, "ratio64", no_wait).port
    await harness.within_one_window()
    for job_type, share in (("big", 6), ("small", 4)):
        for _ in range(share):
            await harness.acquire(port, job_type)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await harness.acquire(port, job_type)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def flood(harness: Harness, port: int, job_type: str, n: int) -> list[asyncio.Future[pb.AcquireResponse]]:
    return [asyncio.ensure_future(harness.acquire(port, job_type, timeout=60)) for _ in range(n)]


async def test_flexible_types_rebalance_by_load_and_waiters_wake_on_the_new_ratio(harness: Harness) -> None:
    port = harness.boot_instance(0, "flexibleRatio", FAST_REBALANCE).port
    await harness.within_one_window(20)
    calls = await flood(harness, port, "flexJobA", 12)

    async def moved() -> pb.GetAllocationResponse | None:
        alloc = await harness.allocation(port)
        ratios = {n: s.current_ratio for n, s in alloc.job_types.items()}
        return alloc if ratios["flexJobA"] > 0.45 else None

    alloc = await eventually(moved, timeout=20, what="flexJobA's ratio to grow")
    assert alloc is not None
    ratios = {n: s.current_ratio for n, s in alloc.job_types.items()}
    assert ratios["flexJobB"] < 1 / 3 and ratios["flexJobC"] < 1 / 3
    assert min(ratios.values()) >= 0.01
    assert abs(sum(ratios.values()) - 1) < 1e-9
    assert alloc.job_types["flexJobA"].allocated_slots > 3
    # No lease was released: only the ratio change can have let more than the initial 3 in.
    await eventually(lambda: _granted_more_than(calls, 3), timeout=20, what="waiters woken by the new ratio")
    for call in calls:
        call.cancel()
    await asyncio.gather(*calls, return_exceptions=True)


async def _granted_more_than(calls: list[asyncio.Future[pb.AcquireResponse]], n: int) -> bool:
    return sum(1 for c in calls if c.done() and not c.cancelled() and c.exception() is None) > n


async def test_a_fixed_type_keeps_its_share_under_a_flexible_burst(harness: Harness) -> None:
    overrides = {**FAST_REBALANCE, "job_types": {"fixedJobType": {"max_wait_ms": {"test-model": 0}}}}
    port = harness.boot_instance(0, "fixedRatio", overrides).port
    await harness.within_one_window(20)
    calls = await flood(harness, port, "flexibleJobTypeA", 15)

    async def rebalanced() -> bool:
        alloc = await harness.allocation(port)
        return alloc.job_types["flexibleJobTypeA"].current_ratio > 0.4

    await eventually(rebalanced, timeout=20, what="the burst to take ratio from flexibleJobTypeB")
    alloc = await harness.allocation(port)
    assert alloc.job_types["fixedJobType"].current_ratio == pytest.approx(0.4, abs=1e-12)
    assert alloc.job_types["fixedJobType"].allocated_slots == 4
    grants = [await harness.acquire(port, "fixedJobType") for _ in range(4)]
    assert all(g.model_id == "test-model" for g in grants)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await harness.acquire(port, "fixedJobType")
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    for call in calls:
        call.cancel()
    await asyncio.gather(*calls, return_exceptions=True)


async def test_ratios_are_local_to_each_instance(harness: Harness) -> None:
    busy = harness.boot_instance(0, "flexibleRatio", FAST_REBALANCE).port
    idle = harness.boot_instance(0, "flexibleRatio", FAST_REBALANCE).port
    await harness.within_one_window(20)
    calls = await flood(harness, busy, "flexJobA", 10)

    async def busy_moved() -> bool:
        return (await harness.allocation(busy)).job_types["flexJobA"].current_ratio > 0.4

    await eventually(busy_moved, timeout=20, what="the busy instance's ratios to move")
    # The idle instance has rebalanced on its own interval many times over by now, with no load.
    idle_alloc = await harness.allocation(idle)
    for state in idle_alloc.job_types.values():
        assert state.current_ratio == pytest.approx(1 / 3, abs=1e-12)
        assert state.current_ratio == state.initial_ratio
    for call in calls:
        call.cancel()
    await asyncio.gather(*calls, return_exceptions=True)


async def test_in_flight_and_window_use_per_type_and_model(harness: Harness) -> None:
    port = harness.boot_instance(0, "slotCalculation").port
    await harness.within_one_window()
    a = await harness.acquire(port, "jobTypeA")
    await harness.acquire(port, "jobTypeB")
    alloc = await harness.allocation(port)
    rows = alloc.model_job_types["model-alpha"].job_types
    assert (rows["jobTypeA"].in_flight, rows["jobTypeA"].window_used) == (1, 10_000)
    assert (rows["jobTypeB"].in_flight, rows["jobTypeB"].window_used) == (1, 5000)
    assert alloc.job_types["jobTypeA"].in_flight == 1
    await harness.release(port, a.lease_id, actual=pb.Usage(request_count=1, input_tokens=2500))
    rows = (await harness.allocation(port)).model_job_types["model-alpha"].job_types
    assert (rows["jobTypeA"].in_flight, rows["jobTypeA"].window_used) == (0, 2500)


async def test_rebalancing_also_follows_releases_not_only_the_interval(harness: Harness) -> None:
    # The interval is far beyond the test: only releases_per_adjustment can move the ratios.
    overrides = {"ratio_adjustment": {"adjustment_interval_ms": 3_600_000, "releases_per_adjustment": 3}}
    port = harness.boot_instance(0, "flexibleRatio", overrides).port
    await harness.within_one_window(20)
    held = [await harness.acquire(port, "flexJobA") for _ in range(3)]
    calls = await flood(harness, port, "flexJobA", 6)
    before = await harness.allocation(port)
    assert before.job_types["flexJobA"].current_ratio == pytest.approx(1 / 3)
    for lease in held:
        await harness.release(port, lease.lease_id, actual=pb.Usage())

    async def moved() -> bool:
        return (await harness.allocation(port)).job_types["flexJobA"].current_ratio > 1 / 3 + 0.01

    await eventually(moved, timeout=10, what="three releases to trigger a rebalancing")
    for call in calls:
        call.cancel()
    await asyncio.gather(*calls, return_exceptions=True)
