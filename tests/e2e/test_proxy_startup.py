"""A proxy is usable the moment it prints its listening line (SPEC §7)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2

from rllocal.processes import free_port
from rlproto import ratelimit_pb2 as pb

from .harness import ROOMY, ROOMY_JOB, Harness, Process, eventually, health

SERVING = int(health_pb2.HealthCheckResponse.SERVING)
NOT_SERVING = int(health_pb2.HealthCheckResponse.NOT_SERVING)
BOOTS = 15
ACQUIRES_PER_BOOT = 6


async def _outcome(call: object) -> str:
    """'OK' or the status name and details, so that one failed call does not hide the others."""
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as err:
        return f"{err.code().name}: {err.details()}"
    return "OK"


async def test_calls_sent_the_instant_a_proxy_starts_are_served(harness: Harness) -> None:
    a = harness.boot_instance(0, ROOMY)
    b = harness.boot_instance(0, ROOMY)
    held: list[pb.AcquireResponse] = []
    for boot in range(BOOTS):
        proxy = harness.boot_proxy([a.port, b.port], wait_serving=False)
        stub = harness.stub(proxy.port)
        # Leases granted through the previous proxy are released through this one, and allocations
        # asked for by instance id, while this proxy is still learning its targets.
        acquires = [
            harness.acquire(proxy.port, ROOMY_JOB, job_id=f"boot{boot}-{n}", timeout=30)
            for n in range(ACQUIRES_PER_BOOT)
        ]
        releases = [harness.release(proxy.port, lease.lease_id) for lease in held]
        allocations = [
            stub.GetAllocation(pb.GetAllocationRequest(instance_id=i.instance_id), timeout=30) for i in (a, b)
        ]
        granted = await asyncio.gather(*acquires, return_exceptions=True)
        others = await asyncio.gather(*(_outcome(call) for call in (*releases, *allocations)))
        failures = [f"{r.code().name}: {r.details()}" for r in granted if isinstance(r, grpc.aio.AioRpcError)]
        assert not failures, f"boot {boot}: {failures}"
        assert all(outcome == "OK" for outcome in others), f"boot {boot}: {others}"
        held = [r for r in granted if isinstance(r, pb.AcquireResponse)]
        assert len(held) == ACQUIRES_PER_BOOT, granted
        harness.kill_proxy()
    for instance in (a, b):
        own = sum(lease.instance_id == instance.instance_id for lease in held)
        assert harness.fetch_allocation(instance.port).active_leases == own


@contextmanager
def paused(processes: list[Process]) -> Iterator[None]:
    """SIGSTOP: the kernel still accepts connections, but nothing answers, as on a swamped machine."""
    for p in processes:
        p.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for p in processes:
            p.proc.send_signal(signal.SIGCONT)


async def test_calls_wait_for_the_first_health_answer(harness: Harness) -> None:
    instances = [harness.boot_instance(0, ROOMY), harness.boot_instance(0, ROOMY)]
    with paused(instances):
        proxy = harness.boot_proxy([i.port for i in instances], wait_serving=False)
        stub = harness.stub(proxy.port)
        acquires = [
            asyncio.create_task(harness.acquire(proxy.port, ROOMY_JOB, timeout=30)) for _ in range(ACQUIRES_PER_BOOT)
        ]
        try:
            # With no target answered yet a call neither fails nor goes anywhere: it waits, here
            # until its own deadline.
            started = time.monotonic()
            early = await _outcome(stub.GetAllocation(pb.GetAllocationRequest(), timeout=1))
            assert early.startswith("DEADLINE_EXCEEDED"), early
            assert time.monotonic() - started >= 0.9
            assert not any(task.done() for task in acquires)
        except BaseException:
            for task in acquires:
                task.cancel()
            await asyncio.gather(*acquires, return_exceptions=True)
            raise
    leases = await asyncio.gather(*acquires)
    assert {lease.instance_id for lease in leases} <= {i.instance_id for i in instances}
    for lease in leases:
        await harness.release(proxy.port, lease.lease_id)


async def test_a_target_that_is_down_at_start_does_not_hold_up_the_other(harness: Harness) -> None:
    live = harness.boot_instance(0, ROOMY)
    for _ in range(3):
        proxy = harness.boot_proxy([free_port(), live.port], wait_serving=False)
        leases = await asyncio.gather(*(harness.acquire(proxy.port, ROOMY_JOB, timeout=30) for _ in range(4)))
        assert {lease.instance_id for lease in leases} == {live.instance_id}
        for lease in leases:
            await harness.release(proxy.port, lease.lease_id)
        harness.kill_proxy()


async def test_targets_known_down_fail_at_once(harness: Harness) -> None:
    dead = [free_port(), free_port()]
    proxy = harness.boot_proxy(dead, wait_serving=False)
    started = time.monotonic()
    try:
        await harness.acquire(proxy.port, ROOMY_JOB, timeout=30)
    except grpc.aio.AioRpcError as err:
        elapsed = time.monotonic() - started
        assert err.code() == grpc.StatusCode.UNAVAILABLE, err
        details = err.details() or ""
        assert details.startswith("no healthy target: "), details
        assert all(f"127.0.0.1:{port} (unreachable" in details for port in dead), details
    else:
        raise AssertionError("Acquire with every target down was granted")
    # Far below the 30 s deadline: refused connections make the targets known down, not unknown.
    assert elapsed < 5.0, elapsed


async def test_proxy_health_follows_its_targets(harness: Harness) -> None:
    ports = [free_port(), free_port()]
    proxy = harness.boot_proxy(ports, wait_serving=False)

    async def health_is(status: int) -> bool:
        return await health(proxy.port) == status

    await eventually(lambda: health_is(NOT_SERVING), timeout=10, what="proxy answering NOT_SERVING")
    # Both targets known down: still NOT_SERVING.
    try:
        await harness.acquire(proxy.port, ROOMY_JOB, timeout=30)
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.UNAVAILABLE, err
    assert await health(proxy.port) == NOT_SERVING

    harness.boot_instance(ports[1], ROOMY)
    await eventually(lambda: health_is(SERVING), timeout=15, what="proxy SERVING once a target is")
    lease = await harness.acquire(proxy.port, ROOMY_JOB, timeout=30)
    await harness.release(proxy.port, lease.lease_id)

    harness.kill_instance(ports[1])
    await eventually(lambda: health_is(NOT_SERVING), timeout=15, what="proxy NOT_SERVING once none is")
