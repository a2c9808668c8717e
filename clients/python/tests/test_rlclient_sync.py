"""The blocking client's own logic against a scripted in-process limiter."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from rlclient import (
    CapacityExhausted,
    InvalidRequest,
    LeaseNotFound,
    Outcome,
    RateLimitClient,
    RetryPolicy,
    ServiceUnavailable,
    Usage,
)
from rlclient._proto import ratelimit_pb2 as pb
from rlclient_fake import ESTIMATE, FAST_RETRY, FakeLimiter


def releases(limiter: FakeLimiter) -> list[pb.ReleaseRequest]:
    return [r for name, r in limiter.calls if name == "Release" and isinstance(r, pb.ReleaseRequest)]


def test_lease_carries_the_grant_and_how_it_was_asked(client: RateLimitClient) -> None:
    lease = client.acquire("summary", models=["m1", "m2", "m3"], job_id="j1")
    assert (lease.lease_id, lease.model_id, lease.models_tried) == ("lease-0", "m1", ("m1",))
    assert (lease.reserved_tokens, lease.reserved_requests, lease.instance_id) == (ESTIMATE, 1, "fake")
    assert (lease.job_type, lease.job_id, lease.remaining_models) == ("summary", "j1", ("m2", "m3"))
    lease.release(Usage(input_tokens=100))


def test_job_id_defaults_to_a_fresh_uuid(client: RateLimitClient) -> None:
    first = client.acquire("summary")
    second = client.acquire("summary")
    assert first.job_id != second.job_id and len(first.job_id) == 36


def test_block_with_usage_releases_success_and_refunds(client: RateLimitClient, limiter: FakeLimiter) -> None:
    with client.acquire("summary") as lease:
        lease.usage(input_tokens=300, output_tokens=100, cached_tokens=50)
    assert lease.result is not None and lease.result.refunded_tokens == ESTIMATE - 450
    (request,) = releases(limiter)
    assert request.outcome == pb.SUCCESS
    assert (request.actual.input_tokens, request.actual.output_tokens, request.actual.cached_tokens) == (
        300,
        100,
        50,
    )
    assert request.actual.request_count == 1


def test_block_raising_without_usage_releases_unknown(client: RateLimitClient, limiter: FakeLimiter) -> None:
    with pytest.raises(RuntimeError, match="provider down"), client.acquire("summary") as lease:
        raise RuntimeError("provider down")
    assert lease.result is not None and lease.result.refunded_tokens == 0
    assert [r.outcome for r in releases(limiter)] == [pb.FAILED_UNKNOWN_USAGE]


def test_block_raising_after_usage_releases_failed_with_usage(client: RateLimitClient, limiter: FakeLimiter) -> None:
    with pytest.raises(ValueError, match="bad reply"), client.acquire("summary") as lease:
        lease.usage(input_tokens=200)
        raise ValueError("bad reply")
    (request,) = releases(limiter)
    assert request.outcome == pb.FAILED_WITH_USAGE and request.actual.input_tokens == 200


def test_block_ending_without_usage_commits_the_estimate(client: RateLimitClient, limiter: FakeLimiter) -> None:
    with client.acquire("summary"):
        pass
    assert [r.outcome for r in releases(limiter)] == [pb.FAILED_UNKNOWN_USAGE]


def test_fail_records_the_usage_the_provider_counted(client: RateLimitClient, limiter: FakeLimiter) -> None:
    with client.acquire("summary") as lease:
        lease.fail(Usage(input_tokens=70, request_count=1))
    (request,) = releases(limiter)
    assert request.outcome == pb.FAILED_WITH_USAGE and request.actual.input_tokens == 70


def test_release_twice_sends_one_release(client: RateLimitClient, limiter: FakeLimiter) -> None:
    with client.acquire("summary") as lease:
        first = lease.release(Usage(input_tokens=10))
        assert lease.release(Usage(input_tokens=999)) is first
    assert len(releases(limiter)) == 1


def test_explicit_outcome_needs_usage(client: RateLimitClient) -> None:
    lease = client.acquire("summary")
    with pytest.raises(ValueError, match="SUCCESS needs the usage"):
        lease.release(outcome=Outcome.SUCCESS)
    assert lease.release(outcome=Outcome.FAILED_UNKNOWN_USAGE).refunded_tokens == 0


def test_errors_map_to_classes_with_code_and_message(client: RateLimitClient) -> None:
    with pytest.raises(InvalidRequest) as invalid:
        client.acquire("nope")
    assert invalid.value.code is grpc.StatusCode.INVALID_ARGUMENT and "nope" in invalid.value.message
    with pytest.raises(LeaseNotFound) as missing:
        client.release("lease-404", Outcome.FAILED_UNKNOWN_USAGE)
    assert missing.value.code is grpc.StatusCode.NOT_FOUND
    for _ in range(3):
        client.acquire("summary")
    with pytest.raises(CapacityExhausted, match="all models exhausted"):
        client.acquire("summary")


def test_acquire_retries_unavailable_with_the_same_job_id(client: RateLimitClient, limiter: FakeLimiter) -> None:
    limiter.unavailable["Acquire"] = 2
    lease = client.acquire("summary")
    sent = [r for name, r in limiter.calls if name == "Acquire" and isinstance(r, pb.AcquireRequest)]
    assert len(sent) == 3 and {r.job_id for r in sent} == {lease.job_id}


def test_acquire_gives_up_after_max_attempts(client: RateLimitClient, limiter: FakeLimiter) -> None:
    limiter.unavailable["Acquire"] = FAST_RETRY.max_attempts
    with pytest.raises(ServiceUnavailable, match="scripted outage"):
        client.acquire("summary")
    assert limiter.count("Acquire") == FAST_RETRY.max_attempts


def test_retries_stop_at_the_callers_timeout(fake: tuple[str, FakeLimiter]) -> None:
    target, limiter = fake
    limiter.unavailable["Acquire"] = 100
    patient = RetryPolicy(max_attempts=100, initial_backoff=0.2, max_backoff=0.2)
    with RateLimitClient(target, retry=patient) as c:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            c.acquire("summary", timeout=0.5)
        assert time.monotonic() - started < 0.5
    assert 1 < limiter.count("Acquire") < 100


def test_other_errors_are_not_retried(client: RateLimitClient, limiter: FakeLimiter) -> None:
    with pytest.raises(InvalidRequest):
        client.acquire("nope")
    limiter.unavailable["ExtendLease"] = 1
    lease = client.acquire("summary")
    with pytest.raises(ServiceUnavailable):
        lease.extend(1000)
    assert limiter.count("Acquire") == 2 and limiter.count("ExtendLease") == 1


def test_release_retries_unavailable(client: RateLimitClient, limiter: FakeLimiter) -> None:
    limiter.unavailable["Release"] = 2
    with client.acquire("summary") as lease:
        lease.usage(input_tokens=1)
    assert lease.released and len(releases(limiter)) == 3


def test_keepalive_extends_until_released(client: RateLimitClient, limiter: FakeLimiter) -> None:
    lease = client.acquire("summary", lease_ttl_ms=300, keepalive=True)
    first_expiry = lease.expires_at_ms
    deadline = time.monotonic() + 5
    while limiter.count("ExtendLease") < 2:
        assert time.monotonic() < deadline, "keepalive never extended the lease"
        time.sleep(0.01)
    assert lease.expires_at_ms > first_expiry
    lease.release(Usage(input_tokens=1))
    assert f"rlclient-keepalive-{lease.lease_id}" not in {t.name for t in threading.enumerate()}


def test_delegate_releases_and_acquires_on_the_rest(client: RateLimitClient, limiter: FakeLimiter) -> None:
    with (
        client.acquire("summary", models=["m1", "m2"], job_id="job") as first,
        first.delegate(Usage(input_tokens=5)) as second,
    ):
        assert (second.model_id, second.models_tried, second.remaining_models) == ("m2", ("m2",), ())
        assert second.job_id == "job>m2" and second.models == ("m2",)
        with pytest.raises(CapacityExhausted, match="no model left after m2"):
            second.delegate()
    assert [r.outcome for r in releases(limiter)] == [pb.FAILED_WITH_USAGE, pb.FAILED_UNKNOWN_USAGE]


def test_delegate_without_a_models_list_has_nothing_to_hand_on(client: RateLimitClient) -> None:
    lease = client.acquire("summary")
    with pytest.raises(CapacityExhausted, match="acquired without models"):
        lease.delegate(Usage(input_tokens=5))
    assert lease.released


def test_allocation(client: RateLimitClient) -> None:
    client.acquire("summary")
    assert client.allocation().active_leases == 1


@pytest.mark.parametrize(("token", "sent"), [("tok-1\n", "Bearer tok-1"), (None, None)])
def test_the_token_goes_with_every_call(fake: tuple[str, FakeLimiter], token: str | None, sent: str | None) -> None:
    with (
        RateLimitClient(fake[0], token=token, retry=FAST_RETRY) as c,
        c.acquire("summary", lease_ttl_ms=300) as lease,
    ):
        lease.extend()
        c.allocation()
        lease.usage(input_tokens=1)
    assert len(fake[1].authorizations) == 4
    assert set(fake[1].authorizations) == {sent}


def test_a_token_with_a_space_is_refused_before_any_call(fake: tuple[str, FakeLimiter]) -> None:
    with pytest.raises(ValueError, match="printable ASCII without spaces"):
        RateLimitClient(fake[0], token="two words")
