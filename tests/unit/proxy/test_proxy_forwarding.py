"""The proxy in front of two fake instances, all in this process."""

from __future__ import annotations

import asyncio
import time
from typing import cast

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rlproto import ratelimit_pb2
from rlproxy.policies import LeastLoaded, Weighted

from .proxy_fakes import FakeServer, Proxy, ProxyMaker, wait_until


def _acquire(job_id: str) -> ratelimit_pb2.AcquireRequest:
    return ratelimit_pb2.AcquireRequest(job_id=job_id, job_type="summary")


async def _rpc_error(awaitable: object) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as caught:
        await awaitable  # type: ignore[misc]
    return caught.value


def _trailing(err: aio.AioRpcError) -> dict[str, str | bytes]:
    # The stubs give AioRpcError the sync RpcError's tuple; at run time it carries aio.Metadata.
    return dict(cast(aio.Metadata, err.trailing_metadata()))


def _details(err: aio.AioRpcError) -> str:
    return err.details() or ""


async def _proxy_health(proxy: Proxy, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(proxy.channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    return int(reply.status)


async def test_acquire_round_robin_passes_metadata_both_ways(fakes: list[FakeServer], make_proxy: ProxyMaker) -> None:
    proxy = await make_proxy(fakes)
    leases = []
    for i in range(4):
        call = proxy.stub.Acquire(_acquire(f"job-{i}"), metadata=(("x-req", f"r{i}"),), timeout=5)
        reply = await call
        leases.append(reply.lease_id)
        assert (await call.initial_metadata())["x-instance"] == reply.instance_id
        assert (await call.trailing_metadata())["x-echo"] == f"r{i}"
    assert [lease.split("/")[0] for lease in leases] == ["inst-a", "inst-b", "inst-a", "inst-b"]
    assert fakes[0].instance.acquired == ["job-0", "job-2"]
    assert fakes[1].instance.acquired == ["job-1", "job-3"]
    assert all("user-agent" in md for md in fakes[0].instance.metadata)


async def test_instance_errors_reach_the_client_unchanged(fakes: list[FakeServer], make_proxy: ProxyMaker) -> None:
    proxy = await make_proxy(fakes)
    for code in ("RESOURCE_EXHAUSTED", "INVALID_ARGUMENT", "UNAVAILABLE", "NOT_FOUND"):
        details = f"all models exhausted: tried m1, m2 ({code})"
        err = await _rpc_error(proxy.stub.Acquire(_acquire(f"fail:{code}:{details}"), timeout=5))
        assert err.code() == grpc.StatusCode[code]
        assert err.details() == details
        assert _trailing(err)["x-instance"] in ("inst-a", "inst-b")
    # An instance's own UNAVAILABLE may come after it acted, so it is never retried elsewhere.
    assert len(fakes[0].instance.acquired) + len(fakes[1].instance.acquired) == 4


async def test_deadline_passes_through(fakes: list[FakeServer], make_proxy: ProxyMaker) -> None:
    proxy = await make_proxy(fakes[:1])
    await proxy.stub.Acquire(_acquire("with-deadline"), timeout=4)
    await proxy.stub.Acquire(_acquire("without-deadline"))
    with_deadline, without = fakes[0].instance.time_remaining
    # The deadline travels in whole units of the grpc-timeout header, rounded up.
    assert with_deadline is not None and 3.0 < with_deadline < 4.1
    assert without is None


async def test_deadline_ends_a_hanging_call(fakes: list[FakeServer], make_proxy: ProxyMaker) -> None:
    proxy = await make_proxy(fakes[:1])
    started = time.monotonic()
    err = await _rpc_error(proxy.stub.Acquire(_acquire("hang"), timeout=0.5))
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 2.0
    await asyncio.wait_for(fakes[0].instance.cancelled.wait(), 5)


async def test_client_cancellation_cancels_the_instance_call(fakes: list[FakeServer], make_proxy: ProxyMaker) -> None:
    proxy = await make_proxy(fakes[:1])
    call = proxy.stub.Acquire(_acquire("hang"), timeout=30)
    await asyncio.wait_for(fakes[0].instance.hanging.wait(), 5)
    call.cancel()
    await asyncio.wait_for(fakes[0].instance.cancelled.wait(), 5)


async def test_release_and_extend_reach_the_issuing_instance(fakes: list[FakeServer], make_proxy: ProxyMaker) -> None:
    proxy = await make_proxy(fakes)
    leases = [(await proxy.stub.Acquire(_acquire(f"job-{i}"), timeout=5)).lease_id for i in range(6)]
    for lease in leases:
        extended = await proxy.stub.ExtendLease(ratelimit_pb2.ExtendLeaseRequest(lease_id=lease, ttl_ms=9))
        assert extended.lease_expires_at_ms == 9
        call = proxy.stub.Release(ratelimit_pb2.ReleaseRequest(lease_id=lease), metadata=(("x-req", lease),))
        assert (await call).refunded_tokens == 7
        assert (await call.trailing_metadata())["x-echo"] == lease
    for fake in fakes:
        own = [lease for lease in leases if lease.startswith(f"{fake.instance.instance_id}/")]
        assert fake.instance.released == own
        assert fake.instance.extended == own
    err = await _rpc_error(proxy.stub.Release(ratelimit_pb2.ReleaseRequest(lease_id=leases[0])))
    assert err.code() == grpc.StatusCode.NOT_FOUND


async def test_a_second_proxy_routes_leases_of_the_first(fakes: list[FakeServer], make_proxy: ProxyMaker) -> None:
    first = await make_proxy(fakes)
    second = await make_proxy(list(reversed(fakes)))
    leases = [(await first.stub.Acquire(_acquire(f"job-{i}"), timeout=5)).lease_id for i in range(4)]
    for lease in leases:
        await second.stub.Release(ratelimit_pb2.ReleaseRequest(lease_id=lease), timeout=5)
    assert fakes[0].instance.released == [lease for lease in leases if lease.startswith("inst-a/")]
    assert fakes[1].instance.released == [lease for lease in leases if lease.startswith("inst-b/")]


async def test_bad_and_foreign_lease_ids(fakes: list[FakeServer], make_proxy: ProxyMaker) -> None:
    proxy = await make_proxy(fakes)
    for malformed in ("", "no-slash", "/token", "inst-a/"):
        err = await _rpc_error(proxy.stub.Release(ratelimit_pb2.ReleaseRequest(lease_id=malformed)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, malformed
    err = await _rpc_error(proxy.stub.ExtendLease(ratelimit_pb2.ExtendLeaseRequest(lease_id="inst-z/t")))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert _details(err) == (
        "instance inst-z that issued lease inst-z/t is not reachable through this proxy (stopped or restarted?)"
    )
    assert not fakes[0].instance.extended and not fakes[1].instance.extended


async def test_get_allocation_goes_to_the_named_instance(fakes: list[FakeServer], make_proxy: ProxyMaker) -> None:
    proxy = await make_proxy(fakes)
    for name in ("inst-b", "inst-a"):
        reply = await proxy.stub.GetAllocation(ratelimit_pb2.GetAllocationRequest(instance_id=name))
        assert reply.instance_id == name
    reply = await proxy.stub.GetAllocation(ratelimit_pb2.GetAllocationRequest())
    assert reply.instance_id in ("inst-a", "inst-b")
    err = await _rpc_error(proxy.stub.GetAllocation(ratelimit_pb2.GetAllocationRequest(instance_id="x")))
    assert err.code() == grpc.StatusCode.NOT_FOUND


async def test_failover_and_return_of_a_restarted_instance(fakes: list[FakeServer], make_proxy: ProxyMaker) -> None:
    proxy = await make_proxy(fakes)
    a_lease = (await proxy.stub.Acquire(_acquire("before"), timeout=5)).lease_id
    assert a_lease == "inst-a/before"
    port = fakes[0].port
    await fakes[0].stop()
    # No wait for the proxy to notice: the broken health stream or, before it, a failed connection
    # moves the call on.
    for i in range(6):
        reply = await proxy.stub.Acquire(_acquire(f"during-{i}"), timeout=5)
        assert reply.instance_id == "inst-b"
    assert await _proxy_health(proxy) == health_pb2.HealthCheckResponse.SERVING
    err = await _rpc_error(proxy.stub.Release(ratelimit_pb2.ReleaseRequest(lease_id=a_lease), timeout=5))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "inst-a" in _details(err) and "not reachable" in _details(err)

    restarted = await FakeServer("inst-a2").start(port)
    fakes[0] = restarted
    await wait_until(lambda: proxy.server.pool.known("inst-a2") is not None, what="restarted instance")
    seen = {(await proxy.stub.Acquire(_acquire(f"after-{i}"), timeout=5)).instance_id for i in range(4)}
    assert seen == {"inst-a2", "inst-b"}
    err = await _rpc_error(proxy.stub.Release(ratelimit_pb2.ReleaseRequest(lease_id=a_lease), timeout=5))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert restarted.instance.released == []


async def test_connection_failure_moves_acquire_on_before_health_notices(
    fakes: list[FakeServer], make_proxy: ProxyMaker
) -> None:
    proxy = await make_proxy(fakes, Weighted([1, 1]))
    target_a = proxy.server.pool.targets[0]
    await fakes[0].stop()
    await wait_until(lambda: not target_a.serving, what="target a down")
    # As if the health stream had not noticed yet: the next pick is a, whose connection fails.
    target_a.serving = True
    for i in range(4):
        assert (await proxy.stub.Acquire(_acquire(f"moved-{i}"), timeout=5)).instance_id == "inst-b"
    assert fakes[1].instance.acquired == [f"moved-{i}" for i in range(4)]
    await fakes[1].stop()
    await wait_until(lambda: not proxy.server.pool.targets[1].serving, what="target b down")
    proxy.server.pool.targets[1].serving = True
    started = time.monotonic()
    err = await _rpc_error(proxy.stub.Acquire(_acquire("nowhere"), timeout=10))
    assert time.monotonic() - started < 1.0
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert _details(err).count("unreachable: failed to connect") == 2


async def test_not_serving_target_is_skipped_but_keeps_its_leases(
    fakes: list[FakeServer], make_proxy: ProxyMaker
) -> None:
    proxy = await make_proxy(fakes)
    a_lease = (await proxy.stub.Acquire(_acquire("first"), timeout=5)).lease_id
    await fakes[0].set_serving(False)
    target_a = proxy.server.pool.targets[0]
    await wait_until(lambda: not target_a.serving, what="target a NOT_SERVING")
    assert await _proxy_health(proxy, fakes[0].address) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await _proxy_health(proxy, fakes[1].address) == health_pb2.HealthCheckResponse.SERVING
    assert await _proxy_health(proxy) == health_pb2.HealthCheckResponse.SERVING
    for i in range(4):
        assert (await proxy.stub.Acquire(_acquire(f"b-{i}"), timeout=5)).instance_id == "inst-b"
    await proxy.stub.Release(ratelimit_pb2.ReleaseRequest(lease_id=a_lease), timeout=5)
    assert fakes[0].instance.released == [a_lease]
    await fakes[0].set_serving(True)
    await wait_until(lambda: target_a.serving, what="target a SERVING again")
    seen = {(await proxy.stub.Acquire(_acquire(f"both-{i}"), timeout=5)).instance_id for i in range(4)}
    assert seen == {"inst-a", "inst-b"}


async def test_overall_health_is_used_when_the_service_has_no_status_of_its_own(
    make_proxy: ProxyMaker,
) -> None:
    plain = await FakeServer("plain", health_name="").start()
    try:
        proxy = await make_proxy([plain])
        assert (await proxy.stub.Acquire(_acquire("p"), timeout=5)).instance_id == "plain"
        await plain.set_serving(False)
        await wait_until(lambda: not proxy.server.pool.healthy, what="target NOT_SERVING")
        err = await _rpc_error(proxy.stub.Acquire(_acquire("q"), timeout=5))
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert _details(err) == f"no healthy target: {plain.address} (NOT_SERVING)"
    finally:
        await plain.stop()


async def test_all_targets_down_fails_fast(fakes: list[FakeServer], make_proxy: ProxyMaker) -> None:
    proxy = await make_proxy(fakes)
    assert await _proxy_health(proxy) == health_pb2.HealthCheckResponse.SERVING
    for fake in fakes:
        await fake.stop()
    started = time.monotonic()
    err = await _rpc_error(proxy.stub.Acquire(_acquire("nowhere"), timeout=10))
    assert time.monotonic() - started < 1.0
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert _details(err).startswith("no healthy target: ")
    assert all(fake.address in _details(err) for fake in fakes)
    await wait_until(lambda: not proxy.server.pool.healthy, what="proxy NOT_SERVING")
    assert await _proxy_health(proxy) == health_pb2.HealthCheckResponse.NOT_SERVING
    err = await _rpc_error(proxy.stub.GetAllocation(ratelimit_pb2.GetAllocationRequest(), timeout=10))
    assert err.code() == grpc.StatusCode.UNAVAILABLE


async def test_proxy_is_not_serving_until_a_target_is(make_proxy: ProxyMaker) -> None:
    late = FakeServer("late")
    try:
        await late.start()
        port = late.port
        await late.stop()
        proxy = await make_proxy([late], ready=False)
        assert await _proxy_health(proxy) == health_pb2.HealthCheckResponse.NOT_SERVING
        await late.start(port)
        await proxy.ready()
        assert await _proxy_health(proxy) == health_pb2.HealthCheckResponse.SERVING
    finally:
        await late.stop()


async def test_weighted_split_through_the_proxy(fakes: list[FakeServer], make_proxy: ProxyMaker) -> None:
    proxy = await make_proxy(fakes, Weighted([3, 1]))
    await asyncio.gather(*(proxy.stub.Acquire(_acquire(f"w-{i}"), timeout=10) for i in range(400)))
    assert len(fakes[0].instance.acquired) == 300
    assert len(fakes[1].instance.acquired) == 100


async def test_least_loaded_prefers_the_target_with_fewer_open_leases(
    fakes: list[FakeServer], make_proxy: ProxyMaker
) -> None:
    proxy = await make_proxy(fakes, LeastLoaded())
    held = [(await proxy.stub.Acquire(_acquire(f"h-{i}"), timeout=5)).lease_id for i in range(4)]
    for lease in held:
        if lease.startswith("inst-a/"):
            await proxy.stub.Release(ratelimit_pb2.ReleaseRequest(lease_id=lease), timeout=5)
    # inst-a now holds no lease and inst-b two: the next two go to inst-a.
    for i in range(2):
        assert (await proxy.stub.Acquire(_acquire(f"n-{i}"), timeout=5)).instance_id == "inst-a"


async def test_watch_allocation_streams_from_the_named_instance(
    fakes: list[FakeServer], make_proxy: ProxyMaker
) -> None:
    proxy = await make_proxy(fakes)
    for fake in fakes:
        request = ratelimit_pb2.WatchAllocationRequest(instance_id=fake.instance.instance_id)
        replies = [r async for r in proxy.stub.WatchAllocation(request, timeout=5)]
        # The newest message as the client reads it: the last of the three always, the others may
        # be skipped.
        assert {r.instance_id for r in replies} == {fake.instance.instance_id}
        leases = [r.active_leases for r in replies]
        assert leases[-1] == 2 and leases == sorted(set(leases)), leases
        assert fake.instance.watches == 1
    with pytest.raises(aio.AioRpcError) as bad:
        async for _ in proxy.stub.WatchAllocation(ratelimit_pb2.WatchAllocationRequest(min_interval_ms=1), timeout=5):
            pass
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(aio.AioRpcError) as unknown:
        async for _ in proxy.stub.WatchAllocation(ratelimit_pb2.WatchAllocationRequest(instance_id="x"), timeout=5):
            pass
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_leaving_a_watch_cancels_the_instance_stream(fakes: list[FakeServer], make_proxy: ProxyMaker) -> None:
    proxy = await make_proxy(fakes[:1])
    call = proxy.stub.WatchAllocation(ratelimit_pb2.WatchAllocationRequest(min_interval_ms=2), timeout=30)
    newest = 0
    while newest < 2:
        newest = cast(ratelimit_pb2.GetAllocationResponse, await call.read()).active_leases
    call.cancel()
    await asyncio.wait_for(fakes[0].instance.cancelled.wait(), 5)
