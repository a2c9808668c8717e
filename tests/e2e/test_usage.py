"""Actual usage (SPEC §5): refunds, overages, windows, daily limits, lease expiry, nothing leaks."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from rlproto import ratelimit_pb2 as pb

from .harness import Harness, eventually


def used(tokens: int = 0, requests: int = 1) -> pb.Usage:
    return pb.Usage(request_count=requests, input_tokens=tokens)


async def pool(harness: Harness, port: int, model: str) -> pb.Pool:
    return (await harness.allocation(port)).allocation.pools[model]


def window_total(harness: Harness, model: str, kind: str = "m") -> dict[str, int]:
    client = harness.redis()
    out: dict[str, int] = {}
    for key in client.scan_iter(match=f"{{rl}}:w:{model}:{kind}:*"):
        fields: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
        for field, value in fields.items():
            out[field.decode()] = out.get(field.decode(), 0) + int(value)
    return out


def in_flight(harness: Harness, model: str) -> int:
    return harness.in_flight(model).get("_", 0)


async def _tpd(harness: Harness, port: int, value: int) -> bool:
    return (await pool(harness, port, "model-tpd")).tokens_per_day == value


async def test_refund_on_one_instance(harness: Harness) -> None:
    port = harness.boot_instance(0, "slotCalculation").port
    await harness.within_one_window()
    lease = await harness.acquire(port, "jobTypeA")
    # An open lease moves no pool; its release moves it by the actual usage.
    assert (await pool(harness, port, "model-alpha")).tokens_per_minute == 100_000
    assert window_total(harness, "model-alpha")["ot"] == 10_000
    reply = await harness.release(port, lease.lease_id, actual=used(2000))
    assert (reply.refunded_tokens, reply.refunded_requests, reply.overage_tokens) == (8000, 0, 0)
    assert reply.same_window
    assert (await pool(harness, port, "model-alpha")).tokens_per_minute == 98_000
    assert (window_total(harness, "model-alpha")["st"], window_total(harness, "model-alpha")["ot"]) == (2000, 0)


async def test_token_types_add_up_and_price_by_type(harness: Harness) -> None:
    port = harness.boot_instance(0, "slotCalculation").port
    await harness.within_one_window()
    lease = await harness.acquire(port, "jobTypeA")
    usage = pb.Usage(request_count=1, input_tokens=1000, output_tokens=2000, cached_tokens=3000)
    reply = await harness.release(port, lease.lease_id, actual=usage)
    assert reply.refunded_tokens == 4000
    # model-alpha's standard pricing: 1 / 0.1 / 2 USD per million input / cached / output tokens.
    assert reply.cost_usd == pytest.approx((1000 * 1 + 3000 * 0.1 + 2000 * 2) / 1e6)
    assert window_total(harness, "model-alpha")["st"] == 6000


async def test_zero_actual_usage_refunds_everything(harness: Harness) -> None:
    port = harness.boot_instance(0, "slotCalc-tpm-rpm").port
    await harness.within_one_window()
    lease = await harness.acquire(port, "jobTypeA")
    reply = await harness.release(port, lease.lease_id, actual=pb.Usage())
    assert (reply.refunded_tokens, reply.refunded_requests, reply.cost_usd) == (10_000, 1, 0)
    p = await pool(harness, port, "model-delta")
    assert (p.tokens_per_minute, p.requests_per_minute) == (100_000, 50)


async def test_partial_request_refund(harness: Harness) -> None:
    port = harness.boot_instance(0, "slotCalc-rpm").port
    await harness.within_one_window()
    lease = await harness.acquire(port, "jobTypeB")
    assert lease.reserved.requests == 5
    assert (await pool(harness, port, "model-beta")).requests_per_minute == 500
    reply = await harness.release(port, lease.lease_id, actual=used(1000, requests=2))
    assert (reply.refunded_requests, reply.refunded_tokens) == (3, 0)
    assert (await pool(harness, port, "model-beta")).requests_per_minute == 498


async def test_failed_without_usage_refunds_nothing_but_frees_concurrency(harness: Harness) -> None:
    port = harness.boot_instance(0, "expiry").port
    await harness.within_one_window()
    lease = await harness.acquire(port, "work", models=["tpm-model"])
    conc = await harness.acquire(port, "work")
    assert in_flight(harness, "conc-model") == 1
    for held in (lease, conc):
        reply = await harness.release(port, held.lease_id, pb.FAILED_UNKNOWN_USAGE, used(1))
        assert (reply.refunded_tokens, reply.refunded_requests, reply.overage_tokens) == (0, 0, 0)
    assert in_flight(harness, "conc-model") == 0
    # Unknown usage settles the estimate.
    assert (await pool(harness, port, "tpm-model")).tokens_per_minute == 90_000


async def test_failed_with_usage_counts_what_was_used(harness: Harness) -> None:
    port = harness.boot_instance(0, "slotCalculation").port
    await harness.within_one_window()
    lease = await harness.acquire(port, "jobTypeB")
    reply = await harness.release(port, lease.lease_id, pb.FAILED_WITH_USAGE, used(1500))
    assert (reply.refunded_tokens, reply.same_window) == (3500, True)
    assert window_total(harness, "model-alpha")["st"] == 1500


# Heartbeats far apart: within a test, what one instance learns of another's Release comes from the
# published change alone. How soon it arrives is measured by `make bench-propagation`.
NO_HEARTBEAT = {"heartbeat_interval_ms": 600_000, "stale_after_ms": 1_800_000}


async def test_an_overage_shrinks_the_other_instance_pool_at_once(harness: Harness) -> None:
    a = harness.boot_instance(0, "slotCalculation", NO_HEARTBEAT).port
    b = harness.boot_instance(0, "slotCalculation", NO_HEARTBEAT).port
    await eventually(lambda: harness.counts_instances(b, 2), what="two instances")
    await harness.within_one_window()
    assert (await pool(harness, b, "model-alpha")).tokens_per_minute == 50_000
    lease = await harness.acquire(a, "jobTypeA")
    reply = await harness.release(a, lease.lease_id, actual=used(60_000))
    assert (reply.overage_tokens, reply.refunded_tokens) == (50_000, 0)

    async def b_sees_it() -> bool:
        return (await pool(harness, b, "model-alpha")).tokens_per_minute == 20_000

    await eventually(b_sees_it, timeout=10, what="B's pool to shrink to what is left, by the published change")
    # 60 000 settled leaves 40 000, 20 000 for each instance.
    assert (await pool(harness, a, "model-alpha")).tokens_per_minute == 20_000
    alloc = await harness.allocation(a)
    assert alloc.model_job_types["model-alpha"].job_types["jobTypeA"].overages == 1
    assert "overage: job type jobTypeA on model-alpha estimated 10000" in harness.processes[a].log.read_text()


async def test_refunds_across_two_instances_come_back_to_both(harness: Harness) -> None:
    a = harness.boot_instance(0, "slotCalculation").port
    b = harness.boot_instance(0, "slotCalculation").port
    await eventually(lambda: harness.counts_instances(a, 2), what="two instances")
    await harness.within_one_window()
    big = await harness.acquire(a, "jobTypeA")
    over = await harness.acquire(a, "jobTypeB")
    await harness.release(a, over.lease_id, actual=used(75_000))
    # 75 000 settled: (100 000 - 75 000) / 2 each; the open lease moves nothing.
    await eventually(lambda: _tpm(harness, b, 12_500), what="B's pool to follow the settled usage")
    await harness.release(a, big.lease_id, actual=used(1000))
    await eventually(lambda: _tpm(harness, b, 12_000), what="B's pool to follow the refunded lease")
    assert window_total(harness, "model-alpha")["st"] == 76_000


async def test_a_release_sent_to_another_instance_settles_for_the_owner(harness: Harness) -> None:
    owner = harness.boot_instance(0, "slotCalculation")
    other = harness.boot_instance(0, "slotCalculation")
    await eventually(lambda: harness.counts_instances(owner.port, 2), what="two instances")
    await harness.within_one_window()
    lease = await harness.acquire(owner.port, "jobTypeA")
    reply = await harness.release(other.port, lease.lease_id, actual=used(2000))
    assert (reply.refunded_tokens, reply.overage_tokens, reply.same_window) == (8000, 0, True)
    # The usage is the owner's: its own counters move, not the releasing instance's.
    totals = window_total(harness, "model-alpha")
    assert (totals["st"], totals["ot"]) == (2000, 0)
    assert (totals[f"st:{owner.instance_id}"], totals[f"ot:{owner.instance_id}"]) == (2000, 0)
    assert totals.get(f"st:{other.instance_id}", 0) == 0
    assert harness.in_flight("model-alpha")["_"] == 0
    assert harness.in_flight("model-alpha")[owner.instance_id] == 0

    async def owner_settled() -> bool:
        return (await harness.allocation(owner.port)).active_leases == 0

    await eventually(owner_settled, what="the owner to hear that its lease closed")
    # (100 000 - 2 000) / 2 on both.
    await eventually(lambda: _tpm(harness, owner.port, 49_000), what="the owner's pool")
    await eventually(lambda: _tpm(harness, other.port, 49_000), what="the other instance's pool")
    again = await harness.release(owner.port, lease.lease_id, actual=used(2000))
    assert (again.refunded_tokens, again.same_window) == (8000, True)


async def _tpm(harness: Harness, port: int, value: int) -> bool:
    return (await pool(harness, port, "model-alpha")).tokens_per_minute == value


async def test_daily_limits_divide_and_refund_like_minute_ones(harness: Harness) -> None:
    a = harness.boot_instance(0, "slotCalc-tpd").port
    b = harness.boot_instance(0, "slotCalc-tpd").port
    await eventually(lambda: harness.counts_instances(a, 2), what="two instances")
    assert (await pool(harness, a, "model-tpd")).tokens_per_day == 500_000
    lease = await harness.acquire(b, "jobTypeA")
    assert (await pool(harness, b, "model-tpd")).tokens_per_day == 500_000
    reply = await harness.release(b, lease.lease_id, actual=used(4000))
    assert reply.refunded_tokens == 6000 and reply.same_window
    assert (await pool(harness, b, "model-tpd")).tokens_per_day == 498_000
    await eventually(lambda: _tpd(harness, a, 498_000), what="A's pool to follow the settled usage")
    assert window_total(harness, "model-tpd", "d")["st"] == 4000
    assert window_total(harness, "model-tpd", "m") == {}


async def test_a_lease_expires_after_its_ttl_and_frees_its_slot(harness: Harness) -> None:
    port = harness.boot_instance(0, "expiry").port
    lease = await harness.acquire(port, "work", lease_ttl_ms=300)
    assert in_flight(harness, "conc-model") == 1

    async def freed() -> bool:
        alloc = await harness.allocation(port)
        return alloc.active_leases == 0 and in_flight(harness, "conc-model") == 0

    await eventually(freed, timeout=10, what="the expired lease to be freed")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await harness.release(port, lease.lease_id, actual=used(1))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "expired" in (err.value.details() or "")


async def test_an_extended_lease_outlives_its_first_ttl(harness: Harness) -> None:
    port = harness.boot_instance(0, "expiry").port
    lease = await harness.acquire(port, "work", lease_ttl_ms=400)
    reply = await harness.stub(port).ExtendLease(pb.ExtendLeaseRequest(lease_id=lease.lease_id, ttl_ms=20_000))
    assert reply.lease_expires_at_ms > lease.lease_expires_at_ms + 10_000
    deadline = lease.lease_expires_at_ms / 1000 + 0.5
    secs, micros = harness.redis().time()
    await asyncio.sleep(max(0.0, deadline - (secs + micros / 1e6)))
    assert (await harness.allocation(port)).active_leases == 1
    done = await harness.release(port, lease.lease_id, actual=used(1))
    # A concurrency-only model has no token windows: nothing to refund, and no window was left.
    assert (done.same_window, done.refunded_tokens) == (True, 0)
    assert (await harness.allocation(port)).active_leases == 0


async def test_a_new_instance_mid_window_cannot_push_committed_above_the_limit(harness: Harness) -> None:
    no_wait = {"job_types": {"scaleJob": {"max_wait_ms": {"scale-model": 0}}}}
    a = harness.boot_instance(0, "instanceScaling", no_wait).port
    await harness.within_one_window(15)
    for _ in range(10):
        await harness.acquire(a, "scaleJob")
    b = harness.boot_instance(0, "instanceScaling", no_wait).port
    await eventually(lambda: harness.counts_instances(b, 2), what="B to join")
    # B's share reads 50 000, but A's open leases hold the whole window: the global cap refuses.
    assert (await pool(harness, b, "scale-model")).tokens_per_minute == 50_000
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await harness.acquire(b, "scaleJob")
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert window_total(harness, "scale-model")["ot"] == 100_000


async def test_nothing_leaks_after_success_failure_expiry_and_death(harness: Harness) -> None:
    a = harness.boot_instance(0, "expiry").port
    b = harness.boot_instance(0, "expiry").port
    await eventually(lambda: harness.counts_instances(a, 2), what="two instances")
    ok = await harness.acquire(a, "work")
    failed = await harness.acquire(b, "work")
    await harness.acquire(a, "work", lease_ttl_ms=200)
    await harness.acquire(b, "work")
    await harness.release(a, ok.lease_id, actual=used(10))
    await harness.release(b, failed.lease_id, pb.FAILED_UNKNOWN_USAGE)
    harness.kill_instance(b)

    async def all_free() -> bool:
        counts = harness.in_flight("conc-model")
        alloc = await harness.allocation(a)
        return all(v == 0 for v in counts.values()) and alloc.allocation.instance_count == 1

    await eventually(all_free, timeout=15, what="every in-flight count back to zero")
    assert (await harness.allocation(a)).active_leases == 0
    client = harness.redis()
    assert sum(client.zcard(key) for key in client.scan_iter(match="{rl}:lx:*")) == 0


async def test_waiters_wake_at_the_minute_boundary_and_late_releases_refund_nothing(harness: Harness) -> None:
    port = harness.boot_instance(0, "instanceScaling").port
    await harness.within_one_window(3)
    leases = [await harness.acquire(port, "scaleJob") for _ in range(10)]
    waiter = asyncio.ensure_future(harness.acquire(port, "scaleJob", timeout=90))
    secs, micros = harness.redis().time()
    boundary = (secs // 60 + 1) * 60
    granted = await asyncio.wait_for(waiter, 80)
    secs, micros = harness.redis().time()
    assert secs >= boundary
    assert granted.waited_ms > 0
    # Woken by the boundary, not by polling: at most a moment after it.
    assert secs + micros / 1e6 - boundary < 5
    reply = await harness.release(port, leases[0].lease_id, actual=used(1000))
    assert (reply.same_window, reply.refunded_tokens, reply.overage_tokens) == (False, 0, 0)
    over = await harness.release(port, leases[1].lease_id, actual=used(15_000))
    assert (over.same_window, over.overage_tokens) == (False, 5000)
    client = harness.redis()
    totals = {
        key.decode(): sum(int(client.hget(key, f) or 0) for f in ("st", "ot"))
        for key in client.scan_iter(match="{rl}:w:scale-model:m:*")
    }
    # The closed window keeps every estimate; the new one has the waiter's estimate plus the late overage.
    assert sorted(totals.values()) == [15_000, 100_000]
    # Every window key expires by itself, one window after it closes.
    secs, micros = client.time()
    now_ms = secs * 1000 + micros // 1000
    for key in totals:
        window = int(key.rsplit(":", 1)[1])
        left_ms = int(client.pttl(key))
        assert abs(now_ms + left_ms - (window + 2) * 60_000) < 1000


async def test_a_concurrency_only_model_adjusts_nothing_but_counts_overages(harness: Harness) -> None:
    port = harness.boot_instance(0, "expiry").port
    lease = await harness.acquire(port, "work")
    reply = await harness.release(port, lease.lease_id, actual=used(25_000))
    assert (reply.refunded_tokens, reply.overage_tokens, reply.same_window) == (0, 0, True)
    alloc = await harness.allocation(port)
    assert alloc.model_job_types["conc-model"].job_types["work"].overages == 1
    assert alloc.allocation.pools["conc-model"].max_concurrent == 4
