"""The Python client (rlclient), blocking and asyncio, against a real rlservice instance."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import TypeVar

import grpc
import pytest
from rlclient import (
    AsyncRateLimitClient,
    CapacityExhausted,
    DeadlineExceeded,
    InvalidRequest,
    LeaseNotFound,
    Outcome,
    RateLimitClient,
    RetryPolicy,
    ServiceUnavailable,
    Usage,
)
from rlclient._proto import ratelimit_pb2 as pb
from rlclient._proto import ratelimit_pb2_grpc as pb_grpc

from rllocal.processes import poll_until

from .harness import Harness

GPT = "openai/gpt-5.2"
GROK = "xai/grok-4.1-fast"
OSS = "deepinfra/gpt-oss-20b"
SUMMARY_TOKENS = 10_000
Resp = TypeVar("Resp")
QUICK_RETRY = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)


async def async_wait_for(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {within}s waiting for {what}"
        await asyncio.sleep(0.02)


def room_in_minute_window(margin_s: float = 3.0) -> None:
    """Waits until the current minute window has ``margin_s`` left.

    Refunds apply only to a release in the window the lease was acquired in; a test that checks
    refund numbers must not straddle a minute boundary.
    """
    poll_until(lambda: 0.2 < time.time() % 60 < 60 - margin_s, margin_s + 1, what="room in the minute window")


@pytest.fixture
def target(harness: Harness) -> str:
    return harness.boot_instance(0, "default").address


@pytest.fixture
def client(target: str) -> Iterator[RateLimitClient]:
    with RateLimitClient(target, retry=QUICK_RETRY) as c:
        yield c


@pytest.fixture
async def aclient(target: str) -> AsyncIterator[AsyncRateLimitClient]:
    async with AsyncRateLimitClient(target, retry=QUICK_RETRY) as c:
        yield c


def window_used(client: RateLimitClient, model: str, job_type: str = "summary") -> int:
    return client.allocation().model_job_types[model].job_types[job_type].window_used


# --- blocking client ---------------------------------------------------------------------------


def test_acquire_and_release_report_refund_and_cost(client: RateLimitClient) -> None:
    room_in_minute_window()
    lease = client.acquire("summary", timeout=10)
    assert (lease.model_id, lease.models_tried) == (GPT, (GPT,))
    assert (lease.reserved_tokens, lease.reserved_requests) == (SUMMARY_TOKENS, 1)
    assert lease.instance_id and lease.expires_at_ms > time.time() * 1000
    result = lease.release(Usage(input_tokens=1000, output_tokens=500, cached_tokens=200))
    assert result.same_window
    assert (result.refunded_tokens, result.refunded_requests) == (SUMMARY_TOKENS - 1700, 0)
    assert (result.overage_tokens, result.overage_requests) == (0, 0)
    assert result.cost_usd == pytest.approx((1000 * 1.75 + 200 * 0.175 + 500 * 14) / 1e6)
    assert window_used(client, GPT) == 1700
    assert lease.release(Usage(input_tokens=1)) is result


def test_usage_above_the_estimate_is_an_overage(client: RateLimitClient) -> None:
    room_in_minute_window()
    with client.acquire("summary", timeout=10) as lease:
        lease.usage(input_tokens=SUMMARY_TOKENS + 2500, request_count=2)
    assert lease.result is not None
    assert (lease.result.overage_tokens, lease.result.overage_requests) == (2500, 1)
    assert lease.result.refunded_tokens == 0


def test_block_with_usage_releases_success(client: RateLimitClient) -> None:
    room_in_minute_window()
    with client.acquire("summary", timeout=10) as lease:
        lease.usage(input_tokens=300, output_tokens=100)
    assert lease.result is not None and lease.result.refunded_tokens == SUMMARY_TOKENS - 400
    assert client.allocation().active_leases == 0


def test_block_raising_without_usage_refunds_nothing(client: RateLimitClient) -> None:
    room_in_minute_window()
    with (
        pytest.raises(RuntimeError, match="provider timed out"),
        client.acquire("summary", timeout=10) as lease,
    ):
        raise RuntimeError("provider timed out")
    assert lease.result is not None and lease.result.refunded_tokens == 0
    assert window_used(client, GPT) == SUMMARY_TOKENS
    assert client.allocation().active_leases == 0


def test_block_raising_after_usage_keeps_that_usage(client: RateLimitClient) -> None:
    room_in_minute_window()
    with pytest.raises(ValueError, match="unparseable"), client.acquire("summary", timeout=10) as lease:
        lease.usage(input_tokens=800, output_tokens=200)
        raise ValueError("unparseable reply")
    assert lease.result is not None and lease.result.refunded_tokens == SUMMARY_TOKENS - 1000
    assert window_used(client, GPT) == 1000


def test_keepalive_holds_a_short_lease_past_its_ttl(client: RateLimitClient) -> None:
    room_in_minute_window(margin_s=6)
    kept = client.acquire("summary", lease_ttl_ms=1000, keepalive=True, timeout=10)
    lapsing = client.acquire("summary", lease_ttl_ms=1000, timeout=10)
    first_expiry = kept.expires_at_ms
    # The lease without keepalive is the control: the service really expires a 1 s lease.
    poll_until(lambda: client.allocation().active_leases <= 1, 10, what="the lease without keepalive to expire")
    assert client.allocation().active_leases == 1, "the kept lease expired too"
    assert time.time() * 1000 > first_expiry
    assert kept.expires_at_ms > first_expiry
    with pytest.raises(LeaseNotFound):
        lapsing.release(Usage(input_tokens=1))
    result = kept.release(Usage(input_tokens=1000))
    assert result.refunded_tokens == SUMMARY_TOKENS - 1000


def test_delegate_moves_to_the_next_model(client: RateLimitClient) -> None:
    room_in_minute_window()
    with client.acquire("summary", models=[GPT, GROK], timeout=10) as first:
        assert first.remaining_models == (GROK,)
        with first.delegate(Usage(input_tokens=50), timeout=10) as second:
            assert (second.model_id, second.models_tried, second.remaining_models) == (GROK, (GROK,), ())
            assert second.job_type == "summary" and second.job_id != first.job_id
            second.usage(input_tokens=2000)
        assert first.result is not None and first.result.refunded_tokens == SUMMARY_TOKENS - 50
        assert second.result is not None and second.result.refunded_tokens == SUMMARY_TOKENS - 2000
    assert client.allocation().active_leases == 0


def test_delegate_with_nothing_left_raises_exhausted(client: RateLimitClient) -> None:
    lease = client.acquire("summary", models=[GROK], timeout=10)
    with pytest.raises(CapacityExhausted, match="all models exhausted") as exhausted:
        lease.delegate(Usage(input_tokens=10))
    assert exhausted.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert lease.released and client.allocation().active_leases == 0


def test_invalid_argument_is_invalid_request(client: RateLimitClient) -> None:
    with pytest.raises(InvalidRequest) as unknown_type:
        client.acquire("noSuchJobType", timeout=10)
    assert unknown_type.value.code is grpc.StatusCode.INVALID_ARGUMENT and unknown_type.value.message
    with pytest.raises(InvalidRequest):
        client.acquire("summary", models=["no/such-model"], timeout=10)


def test_unknown_lease_is_lease_not_found(client: RateLimitClient) -> None:
    with pytest.raises(LeaseNotFound) as missing:
        client.release("no-such-lease", Outcome.SUCCESS, Usage(input_tokens=1))
    assert missing.value.code is grpc.StatusCode.NOT_FOUND
    with pytest.raises(LeaseNotFound):
        client.extend("no-such-lease", 1000)


def test_no_capacity_within_the_wait_is_capacity_exhausted(harness: Harness) -> None:
    no_wait = {"job_types": {"summary": {"max_wait_ms": {GPT: 0}}}}
    instance = harness.boot_instance(0, "default", overrides=no_wait)
    with RateLimitClient(instance.address, retry=QUICK_RETRY) as c:
        held = []
        with pytest.raises(CapacityExhausted, match="all models exhausted") as exhausted:
            for _ in range(200):
                held.append(c.acquire("summary", models=[GPT], timeout=10))
        assert exhausted.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert GPT in exhausted.value.message
        assert 0 < len(held) < 200


def test_full_model_and_short_timeout_is_deadline_exceeded(client: RateLimitClient) -> None:
    # The concurrency-limited model never refills with time, so once this type's share of it is
    # held the next Acquire can only wait; a short timeout ends that wait.
    held = []
    with pytest.raises(DeadlineExceeded) as waited_out:
        for _ in range(250):
            held.append(client.acquire("summary", models=[OSS], timeout=1))
    assert waited_out.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0 < len(held) < 250
    held.pop().release(Usage(input_tokens=1))
    assert client.acquire("summary", models=[OSS], timeout=5).model_id == OSS


def test_same_job_id_returns_the_open_lease(client: RateLimitClient) -> None:
    first = client.acquire("summary", job_id="report-1", timeout=10)
    again = client.acquire("summary", job_id="report-1", timeout=10)
    assert again.lease_id == first.lease_id
    assert client.allocation().active_leases == 1


class LossyFront(pb_grpc.RateLimiterServicer):
    """Forwards to the instance, but answers the first ``lose`` Acquires and Releases with
    UNAVAILABLE after the instance has handled them, as when a reply is lost on the way back.
    """

    def __init__(self, target: str, lose: int) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = pb_grpc.RateLimiterStub(self._channel)
        self.lose = {"Acquire": lose, "Release": lose}
        self.lost_leases: list[str] = []
        self.job_ids: list[str] = []

    def close(self) -> None:
        self._channel.close()

    def _forward(self, call: Callable[..., Resp], request: object, context: grpc.ServicerContext) -> Resp:
        try:
            return call(request, timeout=context.time_remaining())
        except grpc.RpcError as err:
            context.abort(err.code(), err.details() or "")

    def _lose(self, method: str, context: grpc.ServicerContext) -> None:
        if self.lose[method] > 0:
            self.lose[method] -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "reply lost")

    def Acquire(self, request: pb.AcquireRequest, context: grpc.ServicerContext) -> pb.AcquireResponse:
        self.job_ids.append(request.job_id)
        response = self._forward(self._stub.Acquire, request, context)
        if self.lose["Acquire"] > 0:
            self.lost_leases.append(response.lease_id)
        self._lose("Acquire", context)
        return response

    def Release(self, request: pb.ReleaseRequest, context: grpc.ServicerContext) -> pb.ReleaseResponse:
        response = self._forward(self._stub.Release, request, context)
        self._lose("Release", context)
        return response

    def ExtendLease(self, request: pb.ExtendLeaseRequest, context: grpc.ServicerContext) -> pb.ExtendLeaseResponse:
        return self._forward(self._stub.ExtendLease, request, context)

    def GetAllocation(
        self, request: pb.GetAllocationRequest, context: grpc.ServicerContext
    ) -> pb.GetAllocationResponse:
        return self._forward(self._stub.GetAllocation, request, context)

    def WatchAllocation(
        self, request: pb.WatchAllocationRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.GetAllocationResponse]:
        yield from self._stub.WatchAllocation(request, timeout=context.time_remaining())


@contextmanager
def lossy_front(target: str, lose: int) -> Iterator[tuple[str, LossyFront]]:
    front = LossyFront(target, lose)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_RateLimiterServicer_to_server(front, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", front
    finally:
        server.stop(grace=None)
        front.close()


def test_lost_replies_are_retried_without_a_second_lease(target: str) -> None:
    room_in_minute_window()
    with (
        lossy_front(target, lose=2) as (front_target, front),
        RateLimitClient(front_target, retry=QUICK_RETRY) as c,
    ):
        lease = c.acquire("summary", timeout=10)
        assert len(front.job_ids) == 3 and set(front.job_ids) == {lease.job_id}
        assert front.lost_leases == [lease.lease_id, lease.lease_id]
        assert c.allocation().active_leases == 1
        result = lease.release(Usage(input_tokens=100))
        assert result.refunded_tokens == SUMMARY_TOKENS - 100
        assert c.allocation().active_leases == 0


def test_retries_are_bounded(target: str) -> None:
    with (
        lossy_front(target, lose=10) as (front_target, front),
        RateLimitClient(front_target, retry=QUICK_RETRY) as c,
    ):
        with pytest.raises(ServiceUnavailable, match="reply lost"):
            c.acquire("summary", timeout=10)
        assert len(front.job_ids) == QUICK_RETRY.max_attempts


# --- asyncio client ----------------------------------------------------------------------------


async def test_async_acquire_and_release(aclient: AsyncRateLimitClient) -> None:
    room_in_minute_window()
    lease = await aclient.acquire("summary", timeout=10)
    assert (lease.model_id, lease.reserved_tokens) == (GPT, SUMMARY_TOKENS)
    result = await lease.release(Usage(input_tokens=600, output_tokens=400))
    assert (result.refunded_tokens, result.same_window) == (SUMMARY_TOKENS - 1000, True)
    assert await lease.release() is result


async def test_async_context_outcomes(aclient: AsyncRateLimitClient) -> None:
    room_in_minute_window()
    async with aclient.acquire("summary", timeout=10) as ok:
        ok.usage(input_tokens=100)
    with pytest.raises(RuntimeError):
        async with aclient.acquire("summary", timeout=10) as unknown:
            raise RuntimeError("provider down")
    with pytest.raises(RuntimeError):
        async with await aclient.acquire("summary", timeout=10) as partial:
            partial.usage(input_tokens=700)
            raise RuntimeError("bad reply")
    refunds = [lease.result.refunded_tokens if lease.result else None for lease in (ok, unknown, partial)]
    assert refunds == [SUMMARY_TOKENS - 100, 0, SUMMARY_TOKENS - 700]
    assert (await aclient.allocation()).active_leases == 0


async def test_async_keepalive_holds_a_short_lease(aclient: AsyncRateLimitClient) -> None:
    room_in_minute_window(margin_s=6)
    kept = await aclient.acquire("summary", lease_ttl_ms=1000, keepalive=True, timeout=10)
    first_expiry = kept.expires_at_ms
    await async_wait_for(lambda: time.time() * 1000 > first_expiry + 1500, 10, "the first TTL to pass")
    assert kept.expires_at_ms > first_expiry
    assert (await aclient.allocation()).active_leases == 1
    result = await kept.release(Usage(input_tokens=10))
    assert result.refunded_tokens == SUMMARY_TOKENS - 10


async def test_async_delegate(aclient: AsyncRateLimitClient) -> None:
    first = await aclient.acquire("summary", models=[GPT, GROK, OSS], timeout=10)
    async with first.delegate(Usage(input_tokens=10), timeout=10) as second:
        assert (second.model_id, second.remaining_models) == (GROK, (OSS,))
        third = await second.delegate(timeout=10)
        assert third.model_id == OSS
        with pytest.raises(CapacityExhausted):
            await third.delegate(Usage(input_tokens=10))
    assert first.released and second.released and third.released
    assert (await aclient.allocation()).active_leases == 0


async def test_async_errors(aclient: AsyncRateLimitClient) -> None:
    with pytest.raises(InvalidRequest):
        await aclient.acquire("noSuchJobType", timeout=10)
    with pytest.raises(LeaseNotFound):
        await aclient.release("no-such-lease", Outcome.FAILED_UNKNOWN_USAGE)
