"""A fresh proxy: calls that come before its targets' first health answers wait for them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rllocal.processes import free_port
from rlproto import ratelimit_pb2

from .proxy_fakes import FakeServer, Proxy, ProxyMaker, wait_until

T = TypeVar("T")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _acquire(job_id: str) -> ratelimit_pb2.AcquireRequest:
    return ratelimit_pb2.AcquireRequest(job_id=job_id, job_type="summary")


async def _rpc_error(awaitable: Awaitable[object]) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as caught:
        await awaitable
    return caught.value


async def _proxy_health(proxy: Proxy) -> int:
    stub = health_pb2_grpc.HealthStub(proxy.channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
    return int(reply.status)


async def _waits_until_its_deadline(proxy: Proxy) -> None:
    """An Acquire with a short deadline ends DEADLINE_EXCEEDED: the proxy waits rather than fails."""
    started = time.monotonic()
    err = await _rpc_error(proxy.stub.Acquire(_acquire("short"), timeout=0.5))
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err
    assert time.monotonic() - started >= 0.45


def _start(awaitable: Awaitable[T]) -> asyncio.Task[T]:
    async def run() -> T:
        return await awaitable

    return asyncio.create_task(run())


async def test_acquire_waits_for_the_first_health_answer(fakes: list[FakeServer], make_proxy: ProxyMaker) -> None:
    for fake in fakes:
        fake.answering.clear()
    proxy = await make_proxy(fakes, ready=False)
    waiting = _start(proxy.stub.Acquire(_acquire("early"), timeout=10))
    await _waits_until_its_deadline(proxy)
    assert not waiting.done()
    assert await _proxy_health(proxy) == NOT_SERVING
    fakes[1].answering.set()
    assert (await waiting).instance_id == "inst-b"
    assert await _proxy_health(proxy) == SERVING


async def test_a_target_that_has_not_answered_does_not_hold_up_one_that_has(
    fakes: list[FakeServer], make_proxy: ProxyMaker
) -> None:
    fakes[0].answering.clear()
    proxy = await make_proxy(fakes, ready=False)
    replies = await asyncio.gather(*(proxy.stub.Acquire(_acquire(f"j{i}"), timeout=10) for i in range(4)))
    assert {reply.instance_id for reply in replies} == {"inst-b"}


async def test_targets_known_down_at_start_fail_at_once(make_proxy: ProxyMaker) -> None:
    closed = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    proxy = await make_proxy(closed, ready=False)
    started = time.monotonic()
    err = await _rpc_error(proxy.stub.Acquire(_acquire("nowhere"), timeout=10))
    assert time.monotonic() - started < 2.0
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    details = err.details() or ""
    assert details.startswith("no healthy target: ") and details.count("(unreachable") == 2, details
    err = await _rpc_error(proxy.stub.GetAllocation(ratelimit_pb2.GetAllocationRequest(), timeout=10))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started < 2.0
    assert await _proxy_health(proxy) == NOT_SERVING


async def test_a_not_serving_first_answer_counts_as_down(fakes: list[FakeServer], make_proxy: ProxyMaker) -> None:
    for fake in fakes:
        await fake.set_serving(False)
    proxy = await make_proxy(fakes, ready=False)
    started = time.monotonic()
    err = await _rpc_error(proxy.stub.Acquire(_acquire("none"), timeout=10))
    assert time.monotonic() - started < 2.0
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert err.details() == f"no healthy target: {fakes[0].address} (NOT_SERVING), {fakes[1].address} (NOT_SERVING)"
    await fakes[0].set_serving(True)
    await wait_until(lambda: proxy.server.pool.healthy, what="target a SERVING")
    assert (await proxy.stub.Acquire(_acquire("some"), timeout=10)).instance_id == "inst-a"


async def test_a_call_with_no_deadline_waits_no_longer_than_the_first_answer_timeout(
    fakes: list[FakeServer], make_proxy: ProxyMaker
) -> None:
    held = fakes[0]
    held.answering.clear()
    proxy = await make_proxy([held], ready=False, first_answer_timeout_s=0.5)
    err = await _rpc_error(asyncio.wait_for(proxy.stub.Acquire(_acquire("no-deadline")), 10))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert err.details() == f"no healthy target: {held.address} (no health answer within 0.5 s)"
    held.answering.set()
    await wait_until(lambda: proxy.server.pool.healthy, what="the late target SERVING")
    assert (await proxy.stub.Acquire(_acquire("late"))).instance_id == "inst-a"


async def test_lease_calls_wait_for_their_instance_to_answer(fakes: list[FakeServer], make_proxy: ProxyMaker) -> None:
    first = await make_proxy(fakes)
    leases = [(await first.stub.Acquire(_acquire(f"job-{i}"), timeout=5)).lease_id for i in range(2)]
    assert {lease.split("/")[0] for lease in leases} == {"inst-a", "inst-b"}
    for fake in fakes:
        fake.answering.clear()
    second = await make_proxy(fakes, ready=False)
    err = await _rpc_error(second.stub.ExtendLease(ratelimit_pb2.ExtendLeaseRequest(lease_id=leases[0]), timeout=0.5))
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    releases = [
        _start(second.stub.Release(ratelimit_pb2.ReleaseRequest(lease_id=lease), timeout=10)) for lease in leases
    ]
    allocation = _start(second.stub.GetAllocation(ratelimit_pb2.GetAllocationRequest(instance_id="inst-b"), timeout=10))
    await _waits_until_its_deadline(second)
    assert not any(task.done() for task in (*releases, allocation))
    for fake in fakes:
        fake.answering.set()
    for release in releases:
        assert (await release).refunded_tokens == 7
    assert (await allocation).instance_id == "inst-b"
    assert [fake.instance.released for fake in fakes] == [[leases[0]], [leases[1]]]


async def test_an_unnamed_watch_waits_for_the_first_health_answer(
    fakes: list[FakeServer], make_proxy: ProxyMaker
) -> None:
    for fake in fakes:
        fake.answering.clear()
    proxy = await make_proxy(fakes, ready=False)
    call = proxy.stub.WatchAllocation(ratelimit_pb2.WatchAllocationRequest(min_interval_ms=2), timeout=10)
    first = _start(call.read())
    await _waits_until_its_deadline(proxy)
    assert not first.done()
    fakes[1].answering.set()
    reply = await first
    assert isinstance(reply, ratelimit_pb2.GetAllocationResponse) and reply.instance_id == "inst-b"
    call.cancel()
