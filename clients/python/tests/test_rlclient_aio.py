"""The asyncio client's own logic against a scripted in-process limiter."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from rlclient import (
    AsyncRateLimitClient,
    CapacityExhausted,
    InvalidRequest,
    LeaseNotFound,
    Outcome,
    ServiceUnavailable,
    Usage,
)
from rlclient._proto import ratelimit_pb2 as pb
from rlclient_fake import ESTIMATE, FAST_RETRY, FakeLimiter


@pytest.fixture
async def aclient(fake: tuple[str, FakeLimiter]) -> AsyncIterator[AsyncRateLimitClient]:
    async with AsyncRateLimitClient(fake[0], retry=FAST_RETRY, rpc_timeout=5) as c:
        yield c


def outcomes(limiter: FakeLimiter) -> list[int]:
    return [r.outcome for name, r in limiter.calls if name == "Release" and isinstance(r, pb.ReleaseRequest)]


async def test_await_acquire_then_release(aclient: AsyncRateLimitClient) -> None:
    lease = await aclient.acquire("summary", models=["m2", "m3"], job_id="a1")
    assert (lease.model_id, lease.job_id, lease.remaining_models) == ("m2", "a1", ("m3",))
    result = await lease.release(Usage(input_tokens=400, output_tokens=100))
    assert (result.refunded_tokens, result.same_window) == (ESTIMATE - 500, True)
    assert await lease.release() is result


async def test_async_with_acquire_releases_success(aclient: AsyncRateLimitClient, limiter: FakeLimiter) -> None:
    async with aclient.acquire("summary") as lease:
        lease.usage(input_tokens=10)
    assert lease.released and outcomes(limiter) == [pb.SUCCESS]


async def test_async_with_awaited_lease(aclient: AsyncRateLimitClient, limiter: FakeLimiter) -> None:
    async with await aclient.acquire("summary") as lease:
        lease.usage(input_tokens=10)
    assert outcomes(limiter) == [pb.SUCCESS]


async def test_body_raising_picks_the_failure_outcome(aclient: AsyncRateLimitClient, limiter: FakeLimiter) -> None:
    with pytest.raises(RuntimeError):
        async with aclient.acquire("summary"):
            raise RuntimeError("provider down")
    with pytest.raises(RuntimeError):
        async with aclient.acquire("summary") as lease:
            lease.usage(input_tokens=10)
            raise RuntimeError("bad reply")
    assert outcomes(limiter) == [pb.FAILED_UNKNOWN_USAGE, pb.FAILED_WITH_USAGE]


async def test_cancelled_body_still_releases(aclient: AsyncRateLimitClient, limiter: FakeLimiter) -> None:
    entered = asyncio.Event()

    async def job() -> None:
        async with aclient.acquire("summary"):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(job())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert outcomes(limiter) == [pb.FAILED_UNKNOWN_USAGE]


async def test_errors_map_to_classes(aclient: AsyncRateLimitClient) -> None:
    with pytest.raises(InvalidRequest) as invalid:
        await aclient.acquire("nope")
    assert invalid.value.code is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(LeaseNotFound):
        await aclient.release("lease-404", Outcome.FAILED_UNKNOWN_USAGE)
    for _ in range(3):
        await aclient.acquire("summary")
    with pytest.raises(CapacityExhausted):
        await aclient.acquire("summary")


async def test_acquire_and_release_retry_unavailable(aclient: AsyncRateLimitClient, limiter: FakeLimiter) -> None:
    limiter.unavailable.update({"Acquire": 2, "Release": 1})
    async with aclient.acquire("summary") as lease:
        lease.usage(input_tokens=1)
    sent = [r for name, r in limiter.calls if name == "Acquire" and isinstance(r, pb.AcquireRequest)]
    assert len(sent) == 3 and {r.job_id for r in sent} == {lease.job_id}
    assert limiter.count("Release") == 2 and lease.released


async def test_unavailable_gives_up_after_max_attempts(aclient: AsyncRateLimitClient, limiter: FakeLimiter) -> None:
    limiter.unavailable["Acquire"] = FAST_RETRY.max_attempts
    with pytest.raises(ServiceUnavailable):
        await aclient.acquire("summary")
    assert limiter.count("Acquire") == FAST_RETRY.max_attempts


async def test_keepalive_task_extends_until_released(aclient: AsyncRateLimitClient, limiter: FakeLimiter) -> None:
    lease = await aclient.acquire("summary", lease_ttl_ms=300, keepalive=True)
    first_expiry = lease.expires_at_ms
    deadline = time.monotonic() + 5
    while limiter.count("ExtendLease") < 2:
        assert time.monotonic() < deadline, "keepalive never extended the lease"
        await asyncio.sleep(0.01)
    assert lease.expires_at_ms > first_expiry
    await lease.release(Usage(input_tokens=1))
    names = {t.get_name() for t in asyncio.all_tasks()}
    assert f"rlclient-keepalive-{lease.lease_id}" not in names


async def test_delegate_awaited_and_as_context(aclient: AsyncRateLimitClient, limiter: FakeLimiter) -> None:
    first = await aclient.acquire("summary", models=["m1", "m2", "m3"], job_id="job")
    second = await first.delegate(Usage(input_tokens=5))
    assert (second.model_id, second.job_id, second.remaining_models) == ("m2", "job>m2", ("m3",))
    async with second.delegate() as third:
        assert third.model_id == "m3"
        with pytest.raises(CapacityExhausted):
            await third.delegate()
    assert outcomes(limiter) == [pb.FAILED_WITH_USAGE, pb.FAILED_UNKNOWN_USAGE, pb.FAILED_UNKNOWN_USAGE]


async def test_the_token_goes_with_every_call(fake: tuple[str, FakeLimiter]) -> None:
    async with (
        AsyncRateLimitClient(fake[0], token="tok-2", retry=FAST_RETRY) as c,
        c.acquire("summary", lease_ttl_ms=300) as lease,
    ):
        await lease.extend()
        await c.allocation()
        lease.usage(input_tokens=1)
    assert fake[1].authorizations == ["Bearer tok-2"] * 4
