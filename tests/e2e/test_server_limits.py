"""Waiters bounded and server limits set on purpose (docs/operations.md, "gRPC server limits"): a full
wait queue refuses at once and why, a burst of waiters is answered one by one with a reason, an
oversized request and a client pinging too often are told so by gRPC, a request that does not parse
is told so by the server."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest

from rllocal.processes import free_port
from rlproto import ratelimit_pb2 as pb
from rlproto import ratelimit_pb2_grpc as pb_grpc

from .harness import Harness, eventually
from .test_metrics import scraped, value

MODEL = "model-full"
QUEUE_FULL = "the wait queue of this instance is full"


async def hold_the_model(harness: Harness, port: int) -> pb.AcquireResponse:
    return await harness.acquire(port, "job", models=[MODEL])


async def test_a_full_wait_queue_refuses_at_once_and_gives_every_place_back(harness: Harness) -> None:
    port = harness.boot_instance(0, "waiters").port
    held = await hold_the_model(harness, port)
    waiters = [asyncio.ensure_future(harness.acquire(port, "job", models=[MODEL], timeout=120)) for _ in range(5)]

    async def five_wait() -> bool:
        return (await harness.allocation(port)).job_types["job"].waiting == 5

    async def the_sixth_is_refused_at_once() -> None:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await harness.acquire(port, "job", models=[MODEL], timeout=30)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert QUEUE_FULL in (refused.value.details() or ""), refused.value.details()

    await eventually(five_wait, what="five waiters in the queue")
    await the_sixth_is_refused_at_once()
    for w in waiters:
        w.cancel()
    for w in waiters:
        with contextlib.suppress(asyncio.CancelledError):
            await w
    # The places of the cancelled waiters come back: five may wait again, and the first of them gets
    # the held job's capacity once it is released.
    again = [asyncio.ensure_future(harness.acquire(port, "job", models=[MODEL], timeout=120)) for _ in range(5)]
    await eventually(five_wait, what="the queue to fill again with five")
    await the_sixth_is_refused_at_once()
    await harness.release(port, held.lease_id, actual=pb.Usage(request_count=1, input_tokens=10_000))
    done, pending = await asyncio.wait(again, return_when=asyncio.FIRST_COMPLETED)
    granted = done.pop().result()
    for w in pending:
        w.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await w
    await harness.release(port, granted.lease_id, actual=pb.Usage(request_count=1, input_tokens=10_000))

    async def nothing_open() -> bool:
        return not any(harness.in_flight(MODEL).values())

    await eventually(nothing_open, what="no estimate left open in the ledger")


async def test_a_burst_of_3000_waiters_is_answered_each_with_a_reason(harness: Harness) -> None:
    waits = {"max_waiters": 5000, "job_types": {"job": {"max_wait_ms": {MODEL: 2000}}}}
    port = harness.boot_instance(0, "waiters", waits).port
    held = await hold_the_model(harness, port)
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(4)]
    try:
        stubs = [pb_grpc.RateLimiterStub(ch) for ch in channels]
        calls = [
            stubs[i % 4].Acquire(pb.AcquireRequest(job_id=f"burst-{i}", job_type="job", models=[MODEL]), timeout=60)
            for i in range(3000)
        ]
        answers = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        for ch in channels:
            await ch.close(None)
    codes: dict[grpc.StatusCode, int] = {}
    for answer in answers:
        assert isinstance(answer, grpc.aio.AioRpcError), "the model is full: nothing may be granted"
        codes[answer.code()] = codes.get(answer.code(), 0) + 1
        assert answer.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED), (
            answer.code(),
            answer.details(),
        )
        assert answer.details(), answer.code()
    assert grpc.StatusCode.CANCELLED not in codes
    await harness.release(port, held.lease_id, actual=pb.Usage(request_count=1, input_tokens=10_000))
    harness.wait_serving(port)


@pytest.mark.parametrize("through_proxy", [False, True], ids=["instance", "proxy"])
async def test_an_oversized_request_is_refused_and_the_server_keeps_serving(
    harness: Harness, through_proxy: bool
) -> None:
    port = harness.boot_instance(0, "waiters").port
    if through_proxy:
        port = harness.boot_proxy([port]).port
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await harness.acquire(port, "job", job_id="x" * 70_000, models=[MODEL])
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (refused.value.details() or ""), refused.value.details()
    harness.wait_serving(port)
    lease = await hold_the_model(harness, port)
    await harness.release(port, lease.lease_id, actual=pb.Usage(request_count=1, input_tokens=10_000))


@pytest.mark.parametrize("through_proxy", [False, True], ids=["instance", "proxy"])
async def test_a_client_pinging_too_often_is_told_so(harness: Harness, through_proxy: bool) -> None:
    port = harness.boot_instance(0, "waiters").port
    if through_proxy:
        port = harness.boot_proxy([port]).port
    held = await hold_the_model(harness, port)
    options = [
        ("grpc.keepalive_time_ms", 200),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = pb_grpc.RateLimiterStub(channel)
        # A waiting Acquire keeps a call open with no data while the client pings.
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await stub.Acquire(pb.AcquireRequest(job_id="pinging", job_type="job", models=[MODEL]), timeout=50)
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, (ended.value.code(), ended.value.details())
    assert "ping" in (ended.value.details() or "").lower(), ended.value.details()
    await harness.release(port, held.lease_id, actual=pb.Usage(request_count=1, input_tokens=10_000))


@pytest.mark.parametrize("through_proxy", [False, True], ids=["instance", "proxy"])
async def test_a_request_that_does_not_parse_is_invalid_argument_naming_the_method(
    harness: Harness, through_proxy: bool
) -> None:
    metrics = free_port()
    instance = harness.boot_instance(0, "waiters", extra_args=["--metrics-port", str(metrics)])
    # The proxy passes an unrestricted caller's Acquire on as bytes (the instance's answer comes
    # back) and decodes the others for their lease or instance id (it answers those itself).
    port = harness.boot_proxy([instance.port]).port if through_proxy else instance.port
    garbage = b"\xff\xff\xff"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        for method in ("Acquire", "Release", "ExtendLease", "GetAllocation", "WatchAllocation"):
            path = f"/ratelimit.v1.RateLimiter/{method}"
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                if method == "WatchAllocation":
                    async for _ in channel.unary_stream(path, None, None)(garbage, timeout=20):
                        pass
                else:
                    await channel.unary_unary(path, None, None)(garbage, timeout=20)
            details = refused.value.details() or ""
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, refused.value.code(), details)
            assert details.startswith(f"the {method} request does not parse: Error parsing message"), details
        # A request that parses but names what is not there is counted; the ones before were not.
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await pb_grpc.RateLimiterStub(channel).Acquire(pb.AcquireRequest(job_id="j", job_type="nope"), timeout=20)
        assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    samples = await scraped(metrics)
    assert value(samples, "rlservice_acquire_total", model=MODEL, job_type="", result="invalid") == 1
    assert (
        sum(v for (name, _), v in samples.items() if name in ("rlservice_acquire_total", "rlservice_release_total"))
        == 1
    )
    harness.wait_serving(port)
    lease = await hold_the_model(harness, port)
    await harness.release(port, lease.lease_id, actual=pb.Usage(request_count=1, input_tokens=10_000))
