"""The provider has the last word (SPEC §11): a 429 reported on one instance pauses the model on
every instance, and a provider's remaining below the ledger's is charged to every pool."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest
import yaml
from rlclient import AsyncRateLimitClient
from rlclient.providers.openai import openai_report, openai_response

from rllocal.processes import free_port, spawn_module, stop_process
from rlproto import ratelimit_pb2 as pb

from .harness import Harness, eventually
from .test_metrics import scraped, value

ALPHA, BETA = "model-alpha", "model-beta"
# slotCalculation: TPM 100 000 on each model, jobTypeA estimates 10 000 tokens (the largest, so the
# default tolerance), jobTypeB 5 000.
NO_WAIT_ON_ALPHA = {"job_types": {"jobTypeA": {"max_wait_ms": {ALPHA: 0}}}}
TTL_MS = 60_000


def redis_now_ms(harness: Harness) -> int:
    seconds, micros = harness.redis().time()
    return int(seconds) * 1000 + int(micros) // 1000


async def pool(harness: Harness, port: int, model: str = ALPHA) -> pb.Pool:
    return (await harness.allocation(port)).allocation.pools[model]


async def test_a_429_on_one_instance_makes_another_escalate_until_the_pause_ends(harness: Harness) -> None:
    metrics_port = free_port()
    a = harness.boot_instance(0, "slotCalculation", NO_WAIT_ON_ALPHA)
    b = harness.boot_instance(0, "slotCalculation", NO_WAIT_ON_ALPHA, extra_args=["--metrics-port", str(metrics_port)])
    await eventually(lambda: harness.counts_instances(a.port, 2), what="A to count two instances")
    await eventually(lambda: harness.counts_instances(b.port, 2), what="B to count two instances")
    lease = await harness.acquire(a.port, "jobTypeA", models=[ALPHA])
    before = redis_now_ms(harness)
    reply = await harness.release(
        a.port, lease.lease_id, pb.RATE_LIMITED, provider=pb.ProviderFeedback(retry_after_ms=4000)
    )
    after = redis_now_ms(harness)
    paused_until = reply.paused_until_ms
    assert before + 4000 <= paused_until <= after + 4000
    # Nothing was charged: the estimate comes back in its window.
    assert (reply.refunded_tokens, reply.overage_tokens) == (10_000, 0)

    async def b_sees_the_pause() -> bool:
        return (await pool(harness, b.port)).paused_until_ms == paused_until

    await eventually(b_sees_the_pause, what="B to hear of the pause")
    assert value(await scraped(metrics_port), "rlservice_paused_until_ms", model=ALPHA) == paused_until
    # B's next Acquire may not wait on the paused model: it escalates.
    moved = await harness.acquire(b.port, "jobTypeA")
    assert (moved.model_id, list(moved.models_tried)) == (BETA, [ALPHA, BETA])
    assert redis_now_ms(harness) < paused_until, "the test took longer than the pause"
    # One that may wait is granted once the pause has ended, not before.
    waited = await harness.acquire(b.port, "jobTypeB", models=[ALPHA], lease_ttl_ms=TTL_MS)
    assert waited.model_id == ALPHA
    assert waited.lease_expires_at_ms - TTL_MS >= paused_until
    assert waited.waited_ms > 0

    async def pause_gone() -> bool:
        return (await pool(harness, b.port)).paused_until_ms == 0 and (await pool(harness, a.port)).paused_until_ms == 0

    await eventually(pause_gone, what="both instances to report the pause over")


async def test_the_watch_stream_shows_the_pause_begin_and_end(harness: Harness) -> None:
    overrides = {"provider_feedback": {"default_pause_ms": 1500}}
    port = harness.boot_instance(0, "slotCalculation", overrides).port
    call = harness.stub(port).WatchAllocation(pb.WatchAllocationRequest(min_interval_ms=50), timeout=60)
    seen: list[int] = []

    async def follow() -> None:
        async for message in call:
            seen.append(message.allocation.pools[ALPHA].paused_until_ms)

    reader = asyncio.create_task(follow())
    try:
        await eventually(lambda: _true(bool(seen)), what="the first message")
        lease = await harness.acquire(port, "jobTypeA")
        # RATE_LIMITED without a retry-after: the default pause.
        before = redis_now_ms(harness)
        reply = await harness.release(port, lease.lease_id, pb.RATE_LIMITED)
        assert before + 1500 <= reply.paused_until_ms <= redis_now_ms(harness) + 1500
        await eventually(lambda: _true(reply.paused_until_ms in seen), what="the pause on the stream")
        await eventually(lambda: _true(seen[-1] == 0), what="the end of the pause on the stream", timeout=15)
    finally:
        call.cancel()
        reader.cancel()


async def _true(value: bool) -> bool:
    return value


async def test_a_pause_is_capped_and_only_ever_extends(harness: Harness) -> None:
    overrides = {"provider_feedback": {"max_pause_ms": 5000}}
    port = harness.boot_instance(0, "slotCalculation", overrides).port
    first = await harness.acquire(port, "jobTypeA")
    before = redis_now_ms(harness)
    long = await harness.release(
        port, first.lease_id, pb.RATE_LIMITED, provider=pb.ProviderFeedback(retry_after_ms=3_600_000)
    )
    assert before + 5000 <= long.paused_until_ms <= redis_now_ms(harness) + 5000
    second = await harness.acquire(port, "jobTypeB", models=[BETA])
    # Another model's 429 pauses that model alone.
    other = await harness.release(
        port, second.lease_id, pb.RATE_LIMITED, provider=pb.ProviderFeedback(retry_after_ms=1000)
    )
    assert 0 < other.paused_until_ms < long.paused_until_ms
    assert (await pool(harness, port)).paused_until_ms == long.paused_until_ms
    # A shorter retry-after on the paused model leaves its pause as it was; any outcome may carry one.
    assert (await pool(harness, port, BETA)).paused_until_ms == other.paused_until_ms


async def test_the_providers_remaining_charges_the_gap_to_every_pool(harness: Harness) -> None:
    await harness.within_one_window(seconds=20)
    a = harness.boot_instance(0, "slotCalculation")
    b = harness.boot_instance(0, "slotCalculation")
    await eventually(lambda: harness.counts_instances(a.port, 2), what="A to count two instances")
    await eventually(lambda: harness.counts_instances(b.port, 2), what="B to count two instances")
    lease = await harness.acquire(a.port, "jobTypeA", models=[ALPHA])
    # After settling 2 000 the ledger has 98 000 left; the provider says 60 000: 38 000 were spent
    # by someone the ledger never saw, above the tolerance of 10 000 (the largest estimate).
    reply = await harness.release(
        a.port,
        lease.lease_id,
        actual=pb.Usage(request_count=1, input_tokens=2000),
        provider=pb.ProviderFeedback(remaining_tokens=60_000),
    )
    assert (reply.external_tokens, reply.external_requests, reply.refunded_tokens) == (38_000, 0, 8000)
    # settled 40 000: each of two pools is (100 000 - 40 000) / 2, at once on A, by the event on B.
    assert (await pool(harness, a.port)).tokens_per_minute == 30_000

    async def b_pool_is(tpm: int) -> bool:
        p = await pool(harness, b.port)
        return p.tokens_per_minute == tpm and p.external_tokens == 38_000

    await eventually(lambda: b_pool_is(30_000), what="B's pool to shrink by the gap / 2")
    assert (await pool(harness, a.port)).external_tokens == 38_000
    # Within the tolerance: 100 000 - 41 000 = 59 000 left in the ledger, the provider says 55 000.
    lease = await harness.acquire(b.port, "jobTypeB", models=[ALPHA])
    reply = await harness.release(
        b.port,
        lease.lease_id,
        actual=pb.Usage(request_count=1, input_tokens=1000),
        provider=pb.ProviderFeedback(remaining_tokens=55_000),
    )
    assert reply.external_tokens == 0
    await eventually(lambda: b_pool_is(29_500), what="B's pool after a release within the tolerance")
    # The provider never raises capacity: a remaining above the ledger's changes nothing.
    lease = await harness.acquire(a.port, "jobTypeB", models=[ALPHA])
    reply = await harness.release(
        a.port,
        lease.lease_id,
        actual=pb.Usage(request_count=1, input_tokens=1000),
        provider=pb.ProviderFeedback(remaining_tokens=99_000),
    )
    assert reply.external_tokens == 0
    assert (await pool(harness, a.port)).tokens_per_minute == 29_000
    # A repeated Release answers the first reply again, feedback and all.
    again = await harness.release(a.port, lease.lease_id, provider=pb.ProviderFeedback(remaining_tokens=0))
    assert (again.external_tokens, again.refunded_tokens) == (0, 4000)
    assert (await pool(harness, a.port)).tokens_per_minute == 29_000


async def test_the_providers_remaining_requests_correct_the_rpm(harness: Harness) -> None:
    # slotCalc-tpm-rpm: TPM 100 000 and RPM 50; the request tolerance is 1.
    await harness.within_one_window(seconds=15)
    port = harness.boot_instance(0, "slotCalc-tpm-rpm").port
    lease = await harness.acquire(port, "jobTypeA")
    reply = await harness.release(
        port,
        lease.lease_id,
        actual=pb.Usage(request_count=1, input_tokens=100),
        provider=pb.ProviderFeedback(remaining_requests=40, remaining_tokens=100_000),
    )
    # 49 requests left in the ledger, 40 at the provider: 9 external; the tokens are above the ledger's.
    assert (reply.external_requests, reply.external_tokens) == (9, 0)
    p = await pool(harness, port, "model-delta")
    assert (p.requests_per_minute, p.external_requests) == (40, 9)


@pytest.mark.parametrize(
    "provider",
    [
        pb.ProviderFeedback(retry_after_ms=-1),
        pb.ProviderFeedback(remaining_tokens=-5),
        pb.ProviderFeedback(remaining_requests=-1),
        pb.ProviderFeedback(remaining_input_tokens=-1),
        pb.ProviderFeedback(remaining_output_tokens=-1),
    ],
)
async def test_negative_feedback_is_invalid_and_changes_nothing(
    harness: Harness, provider: pb.ProviderFeedback
) -> None:
    port = harness.boot_instance(0, "slotCalculation").port
    lease = await harness.acquire(port, "jobTypeA")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await harness.release(port, lease.lease_id, pb.RATE_LIMITED, provider=provider)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "provider." in (refused.value.details() or "")
    p = await pool(harness, port)
    assert (p.paused_until_ms, p.external_tokens) == (0, 0)
    # The lease is still open and releases as usual.
    reply = await harness.release(port, lease.lease_id, actual=pb.Usage(request_count=1, input_tokens=10))
    assert reply.refunded_tokens == 9990


async def test_feedback_on_an_unknown_lease_is_not_found_and_pauses_nothing(harness: Harness) -> None:
    port = harness.boot_instance(0, "slotCalculation").port
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await harness.release(
            port, "nobody/abc", pb.RATE_LIMITED, provider=pb.ProviderFeedback(retry_after_ms=5000, remaining_tokens=0)
        )
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    for model in (ALPHA, BETA):
        p = await pool(harness, port, model)
        assert (p.paused_until_ms, p.external_tokens, p.tokens_per_minute) == (0, 0, 100_000)


# ----- with the provider simulator --------------------------------------------------------------

KEY = "sk-shared"
SHARED_TPM = 100_000
OUTSIDE_PROMPT_TOKENS = 30_000
MAX_TOKENS = 100
PROVIDER_CONFIG: dict[str, Any] = {
    "seed": 3,
    "latency_ms": {"min": 1, "max": 5},
    "output_tokens": {"min": 10, "max": 50},
    "keys": {KEY: {"gpt-shared": {"api": "openai", "tokens_per_minute": SHARED_TPM, "requests_per_minute": 1000}}},
}
SHARED = "openai/gpt-shared"
# Added to slotCalculation, whose largest estimate (10 000 tokens) is the tolerance.
SHARED_MODEL = {"models": {SHARED: {"tokens_per_minute": SHARED_TPM, "requests_per_minute": 1000}}}


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[int]:
    config = tmp_path / "provider.yaml"
    config.write_text(yaml.safe_dump(PROVIDER_CONFIG))
    proc, port = spawn_module("rlprovider", ["--port", "0", "--config", str(config)], tmp_path / "provider.log", 30)
    try:
        yield port
    finally:
        stop_process(proc)


def provider_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as reply:
        stats: dict[str, Any] = json.loads(reply.read())
    return stats


async def test_an_outside_consumer_of_the_key_shrinks_every_pool_within_one_release(
    harness: Harness, provider: int
) -> None:
    """Someone else spends about 30 % of the key straight at the provider; the next release whose
    caller passes on the provider's headers charges it to the model on both instances."""
    await harness.within_one_window(seconds=20)
    a = harness.boot_instance(0, "slotCalculation", SHARED_MODEL)
    b = harness.boot_instance(0, "slotCalculation", SHARED_MODEL)
    await eventually(lambda: harness.counts_instances(b.port, 2), what="B to count two instances")
    sdk = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{provider}/v1", api_key=KEY, max_retries=0)
    try:
        # ~4 characters a token (docs/provider.md): a prompt of about 30 000 tokens.
        outside = [{"role": "user", "content": "x" * (4 * OUTSIDE_PROMPT_TOKENS)}]
        await sdk.chat.completions.create(model="gpt-shared", messages=outside, max_tokens=10)  # type: ignore[arg-type]
        spent = provider_stats(provider)["keys"][KEY]["gpt-shared"]["accepted"]["tokens"]
        assert 0.28 * SHARED_TPM <= spent <= 0.32 * SHARED_TPM
        async with AsyncRateLimitClient(f"127.0.0.1:{a.port}") as client:
            async with client.acquire("jobTypeB", models=[SHARED], timeout=10) as lease:
                with openai_report(lease):
                    raw = await sdk.chat.completions.with_raw_response.create(
                        model=lease.provider_model,
                        messages=[{"role": "user", "content": "hello"}],
                        max_tokens=MAX_TOKENS,
                    )
                    lease.report(openai_response(raw))
            result = lease.result
    finally:
        await sdk.close()
    assert result is not None
    # The ledger saw only this call, at its actual usage; the provider's remaining lacks the outside
    # call too, and this call's max_tokens where the ledger has its output, less what the bucket
    # refilled since: the gap is the outside call, give or take the refill.
    assert 0.2 * SHARED_TPM <= result.external_tokens <= spent + MAX_TOKENS
    pool_a = await pool(harness, a.port, SHARED)
    assert pool_a.external_tokens == result.external_tokens
    assert pool_a.tokens_per_minute <= (SHARED_TPM - result.external_tokens) // 2

    async def b_shrank() -> bool:
        p = await pool(harness, b.port, SHARED)
        return p.external_tokens == result.external_tokens and p.tokens_per_minute == pool_a.tokens_per_minute

    await eventually(b_shrank, what="B's pool to shrink with A's")
