"""rlproxy in front of real instances: routing, weights, sticky leases, failures and restarts."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from rlproto import ratelimit_pb2 as pb

from .harness import ROOMY, ROOMY_JOB, Harness, Process, eventually, health

SERVING = int(health_pb2.HealthCheckResponse.SERVING)
NOT_SERVING = int(health_pb2.HealthCheckResponse.NOT_SERVING)


async def routes_to(proxy: Process, instances: list[Process]) -> None:
    """Waits until the proxy reports every instance SERVING (it publishes each under its address)."""

    async def all_serving() -> bool:
        states = [await health(proxy.port, i.address) for i in instances]
        return all(state == SERVING for state in states)

    await eventually(all_serving, timeout=10, what=f"proxy to see {[i.address for i in instances]}")


def _polled(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check


async def _error(awaitable: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await awaitable
    return caught.value


async def test_standard_setup_through_the_proxy(harness: Harness) -> None:
    infra = harness.boot_infrastructure("default")
    proxy, ids = infra.proxy.port, {i.instance_id for i in infra.instances}
    await routes_to(infra.proxy, infra.instances)
    jobs = ["summary", "ImageCreation", "WeatherForecast", "BudgetCalculation", "VacationPlanning", "summary"]
    results = [await harness.run_job(proxy, job, actual=pb.Usage(request_count=1, input_tokens=500)) for job in jobs]
    assert all(r.granted and r.release is not None for r in results), [r.details for r in results]
    assert {r.acquire.instance_id for r in results if r.acquire is not None} == ids
    for instance in infra.instances:
        allocation = harness.fetch_allocation(proxy, instance.instance_id)
        assert allocation.instance_id == instance.instance_id
        assert allocation.allocation.instance_count == 2
        assert allocation.active_leases == 0
    assert harness.fetch_allocation(proxy).instance_id in ids
    with pytest.raises(grpc.RpcError) as unknown:
        harness.fetch_allocation(proxy, "no-such-instance")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    async with grpc.aio.insecure_channel(infra.proxy.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for reply in stub.ServerReflectionInfo(iter([request])):
            services = {s.name for s in reply.list_services_response.service}
    assert {"ratelimit.v1.RateLimiter", "grpc.health.v1.Health"} <= services


async def test_weighted_split_over_1000_acquires(harness: Harness) -> None:
    a = harness.boot_instance(0, ROOMY)
    b = harness.boot_instance(0, ROOMY)
    proxy = harness.boot_proxy([a.port, b.port], weights=[26, 25])
    await routes_to(proxy, [a, b])
    gate = asyncio.Semaphore(16)

    async def pair() -> str:
        async with gate:
            lease = await harness.acquire(proxy.port, ROOMY_JOB, timeout=10)
            await harness.release(proxy.port, lease.lease_id)
            return lease.instance_id

    split = Counter(await asyncio.gather(*(pair() for _ in range(1000))))
    # 1000 x 26/51 = 509.8
    assert split[a.instance_id] in (509, 510), split
    assert split[a.instance_id] + split[b.instance_id] == 1000


async def test_release_is_sticky_with_no_state_shared_between_proxies(harness: Harness) -> None:
    infra = harness.boot_infrastructure(ROOMY)
    a, b = infra.instances
    first = infra.proxy
    second = harness.boot_proxy([b.port, a.port])
    await routes_to(first, infra.instances)
    await routes_to(second, infra.instances)
    leases = [await harness.acquire(first.port, ROOMY_JOB) for _ in range(10)]
    assert {lease.instance_id for lease in leases} == {a.instance_id, b.instance_id}
    for instance in infra.instances:
        own = sum(lease.instance_id == instance.instance_id for lease in leases)
        assert harness.fetch_allocation(instance.port).active_leases == own
    for n, lease in enumerate(leases):
        via = second if n % 2 else first
        await harness.release(via.port, lease.lease_id, actual=pb.Usage(request_count=1, input_tokens=10))
    # Only the issuing instance settles its own lease: a release sent elsewhere would leave it open there.
    for instance in infra.instances:
        assert harness.fetch_allocation(instance.port).active_leases == 0


async def test_failover_when_an_instance_is_killed_mid_run(harness: Harness) -> None:
    infra = harness.boot_infrastructure(ROOMY)
    a, b = infra.instances
    proxy = infra.proxy.port
    await routes_to(infra.proxy, infra.instances)
    granted: list[tuple[float, pb.AcquireResponse]] = []
    acquire_errors: list[tuple[grpc.StatusCode, str]] = []
    release_errors: list[tuple[pb.AcquireResponse, grpc.StatusCode, str]] = []
    released: list[pb.AcquireResponse] = []
    stop = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                lease = await harness.acquire(proxy, ROOMY_JOB, timeout=10)
            except grpc.aio.AioRpcError as e:
                acquire_errors.append((e.code(), e.details() or ""))
                continue
            granted.append((started, lease))
            await asyncio.sleep(0.02)
            try:
                await harness.release(proxy, lease.lease_id)
            except grpc.aio.AioRpcError as e:
                release_errors.append((lease, e.code(), e.details() or ""))
            else:
                released.append(lease)

    workers = [asyncio.create_task(worker()) for _ in range(8)]
    try:
        await eventually(
            _polled(lambda: sum(g.instance_id == a.instance_id for _, g in granted) >= 20), what="grants from a"
        )
        harness.kill_instance(a.port)
        killed_at = time.monotonic()
        before = len(granted)
        await eventually(_polled(lambda: len(granted) >= before + 100), what="grants after the kill")
    finally:
        stop.set()
        await asyncio.gather(*workers)

    # Calls in flight at the killed instance fail with a clear UNAVAILABLE; later ones fail over.
    assert all(code == grpc.StatusCode.UNAVAILABLE and details for code, details in acquire_errors)
    assert len(acquire_errors) <= len(workers), acquire_errors
    after_kill = [lease for started, lease in granted if started > killed_at]
    assert after_kill and all(lease.instance_id == b.instance_id for lease in after_kill)
    # Every lease from the survivor is released; the dead instance's leases say why they cannot be.
    assert all(lease.instance_id == a.instance_id for lease, _, _ in release_errors)
    assert all(code == grpc.StatusCode.UNAVAILABLE for _, code, _ in release_errors)
    assert {lease.lease_id for lease in released} | {lease.lease_id for lease, _, _ in release_errors} == {
        lease.lease_id for _, lease in granted
    }
    assert harness.fetch_allocation(b.port).active_leases == 0


async def test_restarted_instance_gets_traffic_and_its_old_leases_fail_cleanly(harness: Harness) -> None:
    infra = harness.boot_infrastructure(ROOMY)
    a, b = infra.instances
    proxy = infra.proxy.port
    await routes_to(infra.proxy, infra.instances)
    old = [await harness.acquire(proxy, ROOMY_JOB) for _ in range(2)]
    old_a = next(lease for lease in old if lease.instance_id == a.instance_id)
    assert harness.stop_instance(a.port) == 0
    for _ in range(4):
        assert (await harness.acquire(proxy, ROOMY_JOB)).instance_id == b.instance_id
    err = await _error(harness.stub(proxy).Release(pb.ReleaseRequest(lease_id=old_a.lease_id), timeout=10))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert f"instance {a.instance_id} that issued lease {old_a.lease_id} is not reachable" in (err.details() or "")

    again = harness.boot_instance(a.port, ROOMY)
    assert again.instance_id != a.instance_id
    await routes_to(infra.proxy, [again, b])
    seen = {(await harness.acquire(proxy, ROOMY_JOB)).instance_id for _ in range(4)}
    assert seen == {again.instance_id, b.instance_id}
    err = await _error(harness.stub(proxy).Release(pb.ReleaseRequest(lease_id=old_a.lease_id), timeout=10))
    assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND)


async def test_proxy_restart_while_leases_are_open(harness: Harness) -> None:
    infra = harness.boot_infrastructure(ROOMY)
    port = infra.proxy.port
    await routes_to(infra.proxy, infra.instances)
    leases = [await harness.acquire(port, ROOMY_JOB) for _ in range(6)]
    harness.kill_proxy()
    await harness.close_channels()
    restarted = harness.boot_proxy([i.port for i in infra.instances], port=port)
    await routes_to(restarted, infra.instances)
    for lease in leases:
        reply = await harness.release(port, lease.lease_id, actual=pb.Usage(request_count=1, input_tokens=10))
        assert reply.refunded_tokens >= 0
    for instance in infra.instances:
        assert harness.fetch_allocation(instance.port).active_leases == 0


async def test_all_instances_down_fails_fast(harness: Harness) -> None:
    infra = harness.boot_infrastructure(ROOMY)
    await routes_to(infra.proxy, infra.instances)
    harness.kill_all_instances()
    started = time.monotonic()
    err = await _error(
        harness.stub(infra.proxy.port).Acquire(pb.AcquireRequest(job_id="x", job_type=ROOMY_JOB), timeout=20)
    )
    assert time.monotonic() - started < 2.0
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert (err.details() or "").startswith("no healthy target")

    async def not_serving() -> bool:
        return await health(infra.proxy.port) == NOT_SERVING

    await eventually(not_serving, timeout=10, what="proxy NOT_SERVING")
