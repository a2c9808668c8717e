"""Input and output tokens limited apart (SPEC §12): each is a dimension like TPM, on two instances:
the pools, both checks, refunds and overages per kind, cached tokens counted as input or not,
rolling buckets and the provider's remaining per kind. The preset token-kinds.yaml has the figures."""

from __future__ import annotations

import grpc

from rllocal.ledger_view import Ledger
from rllocal.processes import free_port
from rlproto import ratelimit_pb2 as pb

from .harness import Harness, eventually
from .test_metrics import scraped, value

PRESET = "token-kinds"
KINDS, NOCACHE = "model-kinds", "model-kinds-nocache"
ITPM, OTPM, TPM = 100_000, 20_000, 1_000_000
# Estimates (input, output) of the two job types.
READING, WRITING = (20_000, 1_000), (1_000, 4_000)
ROLLING = {"models": {KINDS: {"window": "rolling"}}}
PATIENT_WRITING = {"job_types": {"writing": {"max_wait_ms": {KINDS: 30_000}}}}
OUTPUT_REFILL_PER_S = OTPM / 60
TTL_MS = 60_000


def redis_now_ms(harness: Harness) -> int:
    seconds, micros = harness.redis().time()
    return int(seconds) * 1000 + int(micros) // 1000


async def pool(harness: Harness, port: int, model: str = KINDS) -> pb.Pool:
    return (await harness.allocation(port)).allocation.pools[model]


async def both_counted(harness: Harness, a: int, b: int) -> None:
    await eventually(lambda: harness.counts_instances(a, 2), what="A to count two instances")
    await eventually(lambda: harness.counts_instances(b, 2), what="B to count two instances")


async def two_instances(harness: Harness) -> tuple[int, int]:
    a = harness.boot_instance(0, PRESET).port
    b = harness.boot_instance(0, PRESET).port
    await both_counted(harness, a, b)
    return a, b


async def fill(harness: Harness, port: int, job_type: str, model: str = KINDS) -> list[pb.AcquireResponse]:
    """Acquires until the ledger refuses (no job may wait); returns the leases granted."""
    leases = []
    while True:
        try:
            leases.append(await harness.acquire(port, job_type, models=[model], lease_ttl_ms=120_000))
        except grpc.aio.AioRpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.details()
            return leases


def usage(input_tokens: int, output_tokens: int, cached: int = 0) -> pb.Usage:
    return pb.Usage(request_count=1, input_tokens=input_tokens, output_tokens=output_tokens, cached_tokens=cached)


async def pools_are(harness: Harness, ports: tuple[int, ...], *expected: int) -> bool:
    """Whether every instance's pool is expected: tokens, input and output tokens per minute."""
    for port in ports:
        p = await pool(harness, port)
        if (p.tokens_per_minute, p.input_tokens_per_minute, p.output_tokens_per_minute) != expected:
            return False
    return True


async def test_an_input_heavy_type_binds_on_input_and_an_output_heavy_one_on_output(harness: Harness) -> None:
    await harness.within_one_window(seconds=20)
    metrics_port = free_port()
    a = harness.boot_instance(0, PRESET, extra_args=["--metrics-port", str(metrics_port)]).port
    b = harness.boot_instance(0, PRESET).port
    await both_counted(harness, a, b)
    fresh = await harness.allocation(a)
    p, limits = fresh.allocation.pools[KINDS], fresh.allocation.dynamic_limits[KINDS]
    # 50 000 / 10 500 and 10 000 / 2 500: 4 slots; tokens (500 000 / 13 000) do not bind.
    assert (p.tokens_per_minute, p.input_tokens_per_minute, p.output_tokens_per_minute, p.total_slots) == (
        500_000,
        50_000,
        10_000,
        4,
    )
    assert (limits.input_tokens_per_minute, limits.output_tokens_per_minute) == (50_000, 10_000)
    samples = await scraped(metrics_port)
    assert value(samples, "rlservice_pool_input_tokens_per_minute", model=KINDS) == 50_000
    assert value(samples, "rlservice_pool_output_tokens_per_minute", model=KINDS) == 10_000
    # A's share of input tokens holds two reading jobs (40 000 of 50 000); their output (2 000) leaves
    # room for two writing jobs (10 000 of 10 000), which still fit in the input (42 000).
    assert len(await fill(harness, a, "reading")) == 2
    assert len(await fill(harness, a, "writing")) == 2
    assert await fill(harness, a, "reading") == []
    # B the same: the window's output is full (20 000), its input not (84 000 of 100 000).
    assert len(await fill(harness, b, "reading")) == 2
    assert len(await fill(harness, b, "writing")) == 2
    window = (await harness.allocation(a)).allocation
    ledger = Ledger(harness.redis())
    assert ledger.committed_kinds(KINDS, ledger.now_ms() // 60_000) == (84_000, 20_000)
    # Open leases move no pool.
    assert window.pools[KINDS].input_tokens_per_minute == 50_000
    call = harness.stub(b).WatchAllocation(pb.WatchAllocationRequest(), timeout=10)
    try:
        first = await call.read()
        assert isinstance(first, pb.GetAllocationResponse)
        assert first.allocation.pools[KINDS].output_tokens_per_minute == 10_000
    finally:
        call.cancel()


async def test_refunds_and_overages_per_kind(harness: Harness) -> None:
    await harness.within_one_window(seconds=20)
    a, b = await two_instances(harness)
    first, second = await fill(harness, a, "reading")
    # An extended lease keeps its input and output estimates.
    await harness.stub(a).ExtendLease(pb.ExtendLeaseRequest(lease_id=first.lease_id, ttl_ms=60_000), timeout=10)
    reply = await harness.release(a, first.lease_id, actual=usage(5_000, 500))
    assert (reply.refunded_tokens, reply.overage_tokens, reply.same_window) == (15_500, 0, True)
    # Settled 5 500 tokens, 5 000 input, 500 output: every pool moves by half of each.
    await eventually(lambda: pools_are(harness, (a, b), 497_250, 47_500, 9_750), what="pools after a refund")
    # Used as many tokens as estimated, but more output and less input: an output overage.
    reply = await harness.release(a, second.lease_id, actual=usage(18_000, 3_000))
    assert (reply.refunded_tokens, reply.overage_tokens) == (0, 0)
    await eventually(lambda: pools_are(harness, (a, b), 486_750, 38_500, 8_250), what="pools after an overage")
    report = await harness.allocation(a)
    assert report.model_job_types[KINDS].job_types["reading"].overages == 1
    # 38 500 / 10 500 and 8 250 / 2 500: 3 slots.
    assert report.allocation.pools[KINDS].total_slots == 3


async def test_cached_tokens_count_as_input_unless_the_model_says_not(harness: Harness) -> None:
    await harness.within_one_window(seconds=20)
    a, b = await two_instances(harness)
    for model in (KINDS, NOCACHE):
        lease = await harness.acquire(a, "reading", models=[model])
        reply = await harness.release(a, lease.lease_id, actual=usage(2_000, 500, cached=10_000))
        # Tokens are input + output + cached on both.
        assert reply.refunded_tokens == 21_000 - 12_500

    async def b_heard() -> bool:
        return all([(await pool(harness, b, model)).tokens_per_minute < 500_000 for model in (KINDS, NOCACHE)])

    await eventually(b_heard, what="B to hear of both releases")
    counted, left_out = await pool(harness, b, KINDS), await pool(harness, b, NOCACHE)
    # Input settled 12 000 where cached tokens count, 2 000 where they do not.
    assert (counted.input_tokens_per_minute, left_out.input_tokens_per_minute) == (44_000, 49_000)
    assert counted.tokens_per_minute == left_out.tokens_per_minute == 493_750
    assert counted.output_tokens_per_minute == left_out.output_tokens_per_minute == 9_750


async def test_rolling_buckets_refill_and_give_back_per_kind(harness: Harness) -> None:
    # A's writing jobs may wait for the output bucket; B's take what is there or nothing.
    a = harness.boot_instance(0, PRESET, {**ROLLING, **PATIENT_WRITING}).port
    b = harness.boot_instance(0, PRESET, ROLLING).port
    await both_counted(harness, a, b)
    # Two writing jobs on each instance take 16 000 of the output bucket: each share (half of
    # level + open, 10 000) is full.
    writing = [await harness.acquire(a, "writing", models=[KINDS]) for _ in range(2)]
    writing += await fill(harness, b, "writing")
    assert len(writing) == 4
    # Released having used all their output and none of their input: only the input comes back.
    for lease in writing:
        await harness.release(a, lease.lease_id, actual=usage(0, 4_000))
    p = await pool(harness, a)
    assert p.input_tokens_per_minute == 50_000
    assert p.output_tokens_per_minute < 3_000
    # A reading job needs 1 000 output tokens: there are enough at once.
    reading = await harness.acquire(b, "reading", models=[KINDS])
    assert reading.waited_ms == 0
    # A writing job needs 4 000 of A's share, half of level + open: the output bucket must refill
    # to 7 000 first (8 000 with the reading job's 1 000 open), at 20 000 / 60 s.
    asked_at_ms = redis_now_ms(harness)
    held = 2 * (await pool(harness, a)).output_tokens_per_minute
    job = await harness.acquire(a, "writing", models=[KINDS], timeout=60, lease_ttl_ms=TTL_MS)
    granted_after_s = (job.lease_expires_at_ms - TTL_MS - asked_at_ms) / 1000
    expected_s = (8_000 - held) / OUTPUT_REFILL_PER_S
    assert expected_s - 0.05 - 1 / OUTPUT_REFILL_PER_S <= granted_after_s <= expected_s + 3
    assert job.waited_ms > 0
    # Released unused, its output comes back at once: the next writing job needs no refill.
    await harness.release(a, job.lease_id, actual=usage(0, 0))
    again = await harness.acquire(a, "writing", models=[KINDS])
    assert again.waited_ms == 0


async def test_the_providers_remaining_input_tokens_correct_only_the_input_pool(harness: Harness) -> None:
    await harness.within_one_window(seconds=20)
    a, b = await two_instances(harness)
    lease = await harness.acquire(a, "reading", models=[KINDS])
    # After settling 10 000 input and 1 000 output tokens the ledger has 90 000 and 19 000 left. The
    # provider says 40 000 input tokens remain: 50 000 gone, above the tolerance (20 000, the largest
    # input estimate), charged; 16 000 output tokens: 3 000 gone, within its tolerance (4 000).
    reply = await harness.release(
        a,
        lease.lease_id,
        actual=usage(10_000, 1_000),
        provider=pb.ProviderFeedback(remaining_input_tokens=40_000, remaining_output_tokens=16_000),
    )
    # External usage is reported for the tokens dimension, which the provider did not speak of.
    assert reply.external_tokens == 0
    await eventually(lambda: pools_are(harness, (a, b), 494_500, 20_000, 9_500), what="the input pools to shrink")
    assert (await pool(harness, a)).external_tokens == 0
    # Output beyond its tolerance is charged to the output pool alone.
    lease = await harness.acquire(b, "writing", models=[KINDS])
    await harness.release(
        b, lease.lease_id, actual=usage(1_000, 4_000), provider=pb.ProviderFeedback(remaining_output_tokens=10_000)
    )
    # 61 000 input settled; output: 5 000 settled, 15 000 left in the ledger, 10 000 at the provider.
    await eventually(lambda: pools_are(harness, (a, b), 492_000, 19_500, 5_000), what="the output pools to shrink")
