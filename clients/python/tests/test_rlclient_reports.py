"""Leases released with a provider's report (outcome, usage, feedback), blocking and asyncio, against
the scripted in-process limiter; the SDK errors are the SDKs' own classes, built from an HTTP answer."""

from __future__ import annotations

import anthropic
import httpx2
import openai
import pytest
from rlclient import AsyncRateLimitClient, CallReport, Outcome, ProviderFeedback, RateLimitClient, Usage
from rlclient._proto import ratelimit_pb2 as pb
from rlclient.providers.anthropic import anthropic_report
from rlclient.providers.openai import openai_report
from rlclient_fake import ESTIMATE, FAST_RETRY, FakeLimiter

RATE_LIMITED = CallReport(Outcome.RATE_LIMITED, None, ProviderFeedback(retry_after_ms=2000, remaining_requests=0))
SUCCESS = CallReport(Outcome.SUCCESS, Usage(input_tokens=100, output_tokens=20), ProviderFeedback(remaining_tokens=5))


def releases(limiter: FakeLimiter) -> list[pb.ReleaseRequest]:
    return [r for name, r in limiter.calls if name == "Release" and isinstance(r, pb.ReleaseRequest)]


def answer(
    status: int, headers: dict[str, str], url: str = "http://127.0.0.1:1/v1/chat/completions"
) -> httpx2.Response:
    return httpx2.Response(status, headers=headers, request=httpx2.Request("POST", url))


def test_a_recorded_rate_limit_releases_rate_limited_with_its_feedback(
    client: RateLimitClient, limiter: FakeLimiter
) -> None:
    with pytest.raises(RuntimeError), client.acquire("summary") as lease:
        lease.report(RATE_LIMITED)
        raise RuntimeError("the SDK's error, re-raised")
    (request,) = releases(limiter)
    assert request.outcome == pb.RATE_LIMITED and not request.HasField("actual")
    assert request.provider.retry_after_ms == 2000 and request.provider.remaining_requests == 0
    assert not request.provider.HasField("remaining_tokens")
    assert lease.result is not None and lease.result.paused_until_ms > 0


def test_a_reported_success_then_a_raise_keeps_usage_and_feedback(
    client: RateLimitClient, limiter: FakeLimiter
) -> None:
    with pytest.raises(ValueError), client.acquire("summary") as lease:
        lease.report(SUCCESS)
        raise ValueError("could not use the answer")
    (request,) = releases(limiter)
    assert request.outcome == pb.FAILED_WITH_USAGE and request.actual.input_tokens == 100
    assert request.provider.remaining_tokens == 5


def test_a_reported_success_releases_success(client: RateLimitClient, limiter: FakeLimiter) -> None:
    with client.acquire("summary") as lease:
        assert lease.report(SUCCESS) is SUCCESS
    (request,) = releases(limiter)
    assert request.outcome == pb.SUCCESS and request.provider.remaining_tokens == 5
    assert lease.result is not None and lease.result.refunded_tokens == ESTIMATE - 120


def test_release_by_hand_with_feedback(client: RateLimitClient, limiter: FakeLimiter) -> None:
    lease = client.acquire("summary")
    lease.report(SUCCESS)
    result = lease.release(outcome=Outcome.FAILED_WITH_USAGE)  # recorded usage and feedback go along
    assert result.paused_until_ms == 0
    other = client.acquire("summary")
    assert client.release(
        other.lease_id, Outcome.RATE_LIMITED, provider=ProviderFeedback(retry_after_ms=10)
    ).paused_until_ms
    first, second = releases(limiter)
    assert first.outcome == pb.FAILED_WITH_USAGE and first.actual.output_tokens == 20
    assert first.provider.remaining_tokens == 5
    assert second.outcome == pb.RATE_LIMITED and second.provider.retry_after_ms == 10


def test_delegate_after_a_rate_limit_passes_it_on(client: RateLimitClient, limiter: FakeLimiter) -> None:
    lease = client.acquire("summary", models=["m1", "m2"])
    lease.report(RATE_LIMITED)
    with lease.delegate() as second:
        second.usage(input_tokens=1)
    first, _ = releases(limiter)
    assert first.outcome == pb.RATE_LIMITED and first.provider.retry_after_ms == 2000


def test_openai_report_records_the_429_and_reraises(client: RateLimitClient, limiter: FakeLimiter) -> None:
    refusal = answer(429, {"retry-after-ms": "1500", "x-ratelimit-remaining-tokens": "0"})
    with pytest.raises(openai.RateLimitError), client.acquire("summary") as lease, openai_report(lease):
        raise openai.RateLimitError("Rate limit reached", response=refusal, body=None)
    (request,) = releases(limiter)
    assert request.outcome == pb.RATE_LIMITED
    assert (request.provider.retry_after_ms, request.provider.remaining_tokens) == (1500, 0)


@pytest.mark.parametrize(
    ("status", "outcome", "requests"),
    [(400, pb.FAILED_WITH_USAGE, 1), (500, pb.FAILED_UNKNOWN_USAGE, 0), (503, pb.FAILED_UNKNOWN_USAGE, 0)],
)
def test_openai_report_maps_other_statuses(
    client: RateLimitClient, limiter: FakeLimiter, status: int, outcome: int, requests: int
) -> None:
    error = openai.APIStatusError("failed", response=answer(status, {}), body=None)
    with pytest.raises(openai.APIStatusError), client.acquire("summary") as lease, openai_report(lease):
        raise error
    (request,) = releases(limiter)
    assert request.outcome == outcome and request.actual.request_count == requests
    assert request.actual.input_tokens + request.actual.output_tokens == 0


def test_other_errors_pass_through_unreported(client: RateLimitClient, limiter: FakeLimiter) -> None:
    with pytest.raises(KeyError), client.acquire("summary") as lease, openai_report(lease):
        raise KeyError("not the provider's")
    assert [r.outcome for r in releases(limiter)] == [pb.FAILED_UNKNOWN_USAGE]


async def test_async_lease_releases_the_anthropic_429(fake: tuple[str, FakeLimiter]) -> None:
    target, limiter = fake
    refusal = answer(
        429,
        {"retry-after": "3", "anthropic-ratelimit-output-tokens-remaining": "0"},
        url="http://127.0.0.1:1/v1/messages",
    )
    async with AsyncRateLimitClient(target, retry=FAST_RETRY, rpc_timeout=5) as aclient:
        with pytest.raises(anthropic.RateLimitError):
            async with aclient.acquire("summary") as lease:
                with anthropic_report(lease):
                    raise anthropic.RateLimitError("rate_limit_error", response=refusal, body=None)
        async with aclient.acquire("summary") as second:
            second.report(SUCCESS)
    first, success = releases(limiter)
    assert first.outcome == pb.RATE_LIMITED
    assert (first.provider.retry_after_ms, first.provider.remaining_output_tokens) == (3000, 0)
    assert lease.result is not None and lease.result.paused_until_ms > 0
    assert success.outcome == pb.SUCCESS and success.provider.remaining_tokens == 5
