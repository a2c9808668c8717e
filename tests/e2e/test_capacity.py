"""Capacity across instances: exact capacity, capacity plus one, escalation, scaling, the global limit."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2

from .harness import Harness, eventually, health

NO_WAIT = {"job_types": {"scaleJob": {"max_wait_ms": {"scale-model": 0}}}}
FAST_STALE = {"heartbeat_interval_ms": 200, "stale_after_ms": 1000}
NOT_SERVING = int(health_pb2.HealthCheckResponse.NOT_SERVING)


async def slots(harness: Harness, port: int, model: str) -> int:
    return (await harness.allocation(port)).allocation.pools[model].total_slots


async def test_exact_capacity_starts_at_once_and_one_more_is_refused(harness: Harness) -> None:
    await harness.within_one_window()
    # With no wait allowed, a job that had to wait would fail: every grant below started at once.
    a = harness.boot_instance(0, "instanceScaling", NO_WAIT)
    b = harness.boot_instance(0, "instanceScaling", NO_WAIT)
    await eventually(lambda: _all_have(harness, [a.port, b.port], "scale-model", 5), what="5 slots each")
    grants = await asyncio.gather(*(harness.acquire(p, "scaleJob") for p in [a.port] * 5 + [b.port] * 5))
    assert len({g.lease_id for g in grants}) == 10
    assert all(g.waited_ms == 0 for g in grants)
    for port in (a.port, b.port):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await harness.acquire(port, "scaleJob")
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (err.value.details() or "").startswith("all models exhausted")
        assert "scale-model" in (err.value.details() or "")


async def _all_have(harness: Harness, ports: list[int], model: str, n: int) -> bool:
    return all([await slots(harness, p, model) == n for p in ports])


async def test_capacity_plus_one_waits_its_max_wait_then_is_exhausted(harness: Harness) -> None:
    await harness.within_one_window()
    wait = {"job_types": {"scaleJob": {"max_wait_ms": {"scale-model": 800}}}}
    port = harness.boot_instance(0, "instanceScaling", wait).port
    for _ in range(10):
        await harness.acquire(port, "scaleJob")
    waiting = asyncio.ensure_future(harness.acquire(port, "scaleJob"))
    await eventually(
        lambda: _waiting(harness, port, "scale-model", "scaleJob", 1), what="the extra job to wait in the queue"
    )
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await waiting
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert time.monotonic() - started < 5
    assert await _waiting(harness, port, "scale-model", "scaleJob", 0)


async def _waiting(harness: Harness, port: int, model: str, job_type: str, n: int) -> bool:
    alloc = await harness.allocation(port)
    return alloc.model_job_types[model].job_types[job_type].waiting == n


async def test_a_waiting_job_starts_when_a_release_frees_room(harness: Harness) -> None:
    await harness.within_one_window()
    port = harness.boot_instance(0, "instanceScaling").port
    leases = [await harness.acquire(port, "scaleJob") for _ in range(10)]
    waiting = asyncio.ensure_future(harness.acquire(port, "scaleJob"))
    await eventually(lambda: _waiting(harness, port, "scale-model", "scaleJob", 1), what="a waiter")
    await harness.release(port, leases[0].lease_id)
    granted = await asyncio.wait_for(waiting, 10)
    assert granted.model_id == "scale-model"
    assert granted.waited_ms > 0


async def test_capacity_plus_one_escalates_to_the_next_model(harness: Harness) -> None:
    await harness.within_one_window()
    no_wait = {"job_types": {"jobTypeA": {"max_wait_ms": {"model-alpha": 0}}}}
    port = harness.boot_instance(0, "slotCalculation", no_wait).port
    # jobTypeA holds 0.6 of 100 000 TPM on model-alpha: 6 jobs of 10 000 tokens.
    grants = [await harness.acquire(port, "jobTypeA") for _ in range(7)]
    assert [g.model_id for g in grants] == ["model-alpha"] * 6 + ["model-beta"]
    assert list(grants[-1].models_tried) == ["model-alpha", "model-beta"]


async def test_escalation_through_a_second_and_third_model(harness: Harness) -> None:
    await harness.within_one_window()
    port = harness.boot_instance(0, "escalation3").port
    grants = [await harness.acquire(port, "work") for _ in range(5)]
    assert [g.model_id for g in grants] == ["model-one"] * 2 + ["model-two"] * 2 + ["model-three"]
    assert list(grants[4].models_tried) == ["model-one", "model-two", "model-three"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await harness.acquire(port, "work")
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "model-one, model-two, model-three" in (err.value.details() or "")


async def test_a_request_may_name_its_own_order(harness: Harness) -> None:
    port = harness.boot_instance(0, "escalation3").port
    grant = await harness.acquire(port, "work", models=["model-three", "model-one"])
    assert grant.model_id == "model-three"
    grant = await harness.acquire(port, "work", models=["model-three", "model-one"])
    assert list(grant.models_tried) == ["model-three", "model-one"]


async def test_slots_halve_when_a_second_instance_joins_and_return_when_it_goes_stale(harness: Harness) -> None:
    a = harness.boot_instance(0, "instanceScaling", FAST_STALE)
    assert await slots(harness, a.port, "scale-model") == 10
    b = harness.boot_instance(0, "instanceScaling", FAST_STALE)
    await eventually(lambda: _all_have(harness, [a.port, b.port], "scale-model", 5), what="5 and 5")
    harness.kill_instance(b.port)
    await eventually(lambda: _all_have(harness, [a.port], "scale-model", 10), timeout=15, what="10 after stale")
    assert (await harness.allocation(a.port)).allocation.instance_count == 1


async def test_a_stopped_instance_leaves_at_once(harness: Harness) -> None:
    # Staleness would take a minute here: only the unregistration on SIGTERM can explain a quick return.
    slow_stale = {"heartbeat_interval_ms": 5000, "stale_after_ms": 60_000}
    a = harness.boot_instance(0, "instanceScaling", slow_stale)
    b = harness.boot_instance(0, "instanceScaling", slow_stale)
    await eventually(lambda: _all_have(harness, [a.port, b.port], "scale-model", 5), what="5 and 5")
    started = time.monotonic()
    assert harness.stop_instance(b.port) == 0
    assert time.monotonic() - started < 5
    await eventually(lambda: _all_have(harness, [a.port], "scale-model", 10), timeout=3, what="10 at once")


async def test_three_instances_never_grant_more_than_the_limit(harness: Harness) -> None:
    await harness.within_one_window()
    no_wait = {"job_types": {"scaleJob": {"max_wait_ms": {"scale-model": 0}}}}
    ports = [harness.boot_instance(0, "instanceScaling", no_wait).port for _ in range(3)]
    await eventually(lambda: _all_have(harness, ports, "scale-model", 3), what="3 slots each")
    calls = [harness.acquire(p, "scaleJob") for p in ports for _ in range(8)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    granted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(granted) + len(refused) == len(results)
    assert len(granted) == 9
    assert all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in refused)
    committed = sum(int(v) for k, v in _window_fields(harness).items() if k in (b"st", b"ot"))
    assert committed == 90_000 <= 100_000


def _window_fields(harness: Harness) -> dict[bytes, bytes]:
    client = harness.redis()
    keys = list(client.scan_iter(match="{rl}:w:scale-model:m:*"))
    assert len(keys) == 1
    return client.hgetall(keys[0])  # type: ignore[return-value]


async def test_global_concurrency_holds_while_an_instance_dies_under_load(harness: Harness) -> None:
    overrides = {
        **FAST_STALE,
        "job_types": {t: {"max_wait_ms": {"model-gamma": 0}} for t in ("jobTypeA", "jobTypeB")},
    }
    ports = [harness.boot_instance(0, "slotCalc-concurrent", overrides).port for _ in range(3)]
    await eventually(lambda: _all_have(harness, ports, "model-gamma", 33), what="33 slots each")
    peak = 0
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, harness.in_flight("model-gamma").get("_", 0))
            await asyncio.sleep(0.005)

    sampler = asyncio.ensure_future(sample())
    first = await asyncio.gather(
        *(harness.acquire(p, t) for p in ports for t in ["jobTypeA"] * 35 + ["jobTypeB"] * 15),
        return_exceptions=True,
    )
    held = [r for r in first if not isinstance(r, BaseException)]
    assert len(held) <= 99
    harness.kill_instance(ports[2])
    survivors = ports[:2]

    async def room_again() -> bool:
        return all([await harness.counts_instances(p, 2) for p in survivors])

    await eventually(room_again, timeout=15, what="the killed instance to go stale")
    second = await asyncio.gather(
        *(harness.acquire(p, t) for p in survivors for t in ["jobTypeA"] * 35 + ["jobTypeB"] * 15),
        return_exceptions=True,
    )
    more = [r for r in second if not isinstance(r, BaseException)]
    sampling = False
    await sampler
    assert more, "the survivors must take over the dead instance's freed slots"
    assert peak <= 100
    assert harness.in_flight("model-gamma").get("_", 0) <= 100


async def test_a_ledger_full_of_models_refuses_more_until_some_are_removed(harness: Harness) -> None:
    """One key prefix holds at most 64 models (the batch of the ledger's maintenance calls)."""
    client = harness.redis()
    stale = [f"retired-{n}" for n in range(64)]
    client.sadd("{rl}:models", *stale)
    instance = harness.boot_instance(0, "instanceScaling", wait_serving=False)

    async def refused() -> bool:
        return "holds 64 models and this configuration adds 1" in instance.log.read_text()

    await eventually(refused, timeout=30, what="the refusal in the instance's log")
    assert await health(instance.port) == NOT_SERVING
    assert client.scard("{rl}:models") == 64
    client.srem("{rl}:models", *stale[:1])
    harness.wait_serving(instance.port)
    assert await slots(harness, instance.port, "scale-model") == 10
    assert client.scard("{rl}:models") == 64
