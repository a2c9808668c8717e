"""WatchAllocation: the live view of an instance, directly, through the proxy and the clients."""

from __future__ import annotations

import asyncio
import itertools
import time

import grpc
import grpc.aio
import pytest
from rlclient import AsyncRateLimitClient, InvalidRequest, RateLimitClient

from rlproto import ratelimit_pb2 as pb
from rlproto import ratelimit_pb2_grpc as pb_grpc

from .harness import Harness, eventually

MODEL = "openai/gpt-5.2"
MODEL_TPM = 500_000


class Watcher:
    """Reads one stream in a task, keeping every message with the time it arrived."""

    def __init__(self, call: grpc.aio.UnaryStreamCall[pb.WatchAllocationRequest, pb.GetAllocationResponse]) -> None:
        self.call = call
        self.messages: list[tuple[float, pb.GetAllocationResponse]] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.call:
            self.messages.append((time.monotonic(), message))

    async def first(self) -> pb.GetAllocationResponse:
        await eventually(lambda: _true(bool(self.messages)), what="the first message")
        return self.messages[0][1]

    def close(self) -> None:
        self.call.cancel()
        self.task.cancel()


async def _true(value: bool) -> bool:
    return value


def watch(harness: Harness, port: int, min_interval_ms: int = 50, instance_id: str = "") -> Watcher:
    request = pb.WatchAllocationRequest(instance_id=instance_id, min_interval_ms=min_interval_ms)
    return Watcher(harness.stub(port).WatchAllocation(request, timeout=120))


async def test_a_watcher_sees_a_release_on_another_instance_within_a_second(harness: Harness) -> None:
    await harness.within_one_window(seconds=15)
    # A fixed window, so that A's pool after the release is one exact number (a rolling bucket refills).
    fixed = {"models": {MODEL: {"window": "fixed"}}}
    a = harness.boot_instance(0, "default", fixed)
    b = harness.boot_instance(0, "default", fixed)
    await eventually(lambda: _counts(harness, a.port, 2), what="A to count two instances")
    watcher = watch(harness, a.port)
    try:
        first = await watcher.first()
        assert first.instance_id == a.instance_id
        before = first.allocation.pools[MODEL].tokens_per_minute
        lease = await harness.acquire(b.port, "summary", models=[MODEL])
        # Settled usage on B moves A's pool too: half of what it leaves of the limit.
        used = 300_000
        await harness.release(b.port, lease.lease_id, actual=pb.Usage(input_tokens=used))
        released_at = time.monotonic()
        expected = (MODEL_TPM - used) // 2
        assert expected < before

        async def seen() -> float:
            for at, message in watcher.messages:
                if message.allocation.pools[MODEL].tokens_per_minute == expected:
                    return at
            return 0.0

        at = await eventually(seen, timeout=10, what=f"A's pool to show {expected}")
        assert at - released_at < 1.0, f"A showed the release {at - released_at:.2f} s after it"
    finally:
        watcher.close()


async def _counts(harness: Harness, port: int, instances: int) -> bool:
    return (await harness.allocation(port)).allocation.instance_count == instances


async def test_a_watcher_that_never_reads_does_not_slow_the_instance(harness: Harness) -> None:
    instance = harness.boot_instance(0, "default")
    # A small receive window and no window growth: the unread stream fills up within a few messages.
    options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
    async with grpc.aio.insecure_channel(instance.address, options=options) as channel:
        stuck = pb_grpc.RateLimiterStub(channel).WatchAllocation(
            pb.WatchAllocationRequest(min_interval_ms=50), timeout=120
        )
        started = time.monotonic()

        async def pair(n: int) -> None:
            lease = await harness.acquire(instance.port, "summary", job_id=f"pair-{n}")
            await harness.release(instance.port, lease.lease_id, actual=pb.Usage(input_tokens=10))

        for batch in range(20):
            await asyncio.wait_for(asyncio.gather(*(pair(batch * 10 + n) for n in range(10))), timeout=60)
        pairs_s = time.monotonic() - started
        state = await harness.allocation(instance.port)
        assert state.active_leases == 0

        # Reading now: the messages already on their way, then the latest state, never a backlog of
        # one message per change (the 200 pairs made 800 changes or more).
        async def read_to_latest() -> int:
            count = 0
            async for message in stuck:
                count += 1
                if message.active_leases == 0 and message.job_types["summary"].in_flight == 0:
                    return count
            raise AssertionError("the stream ended before it showed the latest state")

        count = await asyncio.wait_for(read_to_latest(), timeout=30)
        stuck.cancel()
        assert count <= pairs_s / 0.05 + 2, f"{count} messages over {pairs_s:.1f} s"


async def test_many_changes_in_a_short_time_produce_few_messages(harness: Harness) -> None:
    instance = harness.boot_instance(0, "default")
    watcher = watch(harness, instance.port, min_interval_ms=1000)
    try:
        await watcher.first()
        started = time.monotonic()
        for n in range(30):
            lease = await harness.acquire(instance.port, "summary", job_id=f"burst-{n}")
            await harness.release(instance.port, lease.lease_id, actual=pb.Usage(input_tokens=10))
        busy_s = time.monotonic() - started

        async def settled() -> bool:
            return bool(watcher.messages) and watcher.messages[-1][1].job_types["summary"].in_flight == 0

        await eventually(settled, timeout=10, what="the latest state after the burst")
        times = [at for at, _ in watcher.messages]
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        # 60 changes or more, at most one message per second (the first is sent at once).
        assert len(times) <= busy_s / 1.0 + 3, f"{len(times)} messages over {busy_s:.1f} s"
        assert all(gap >= 0.8 for gap in gaps), gaps
    finally:
        watcher.close()


async def test_bad_requests_get_a_clear_status(harness: Harness) -> None:
    instance = harness.boot_instance(0, "default")
    stub = harness.stub(instance.port)
    for interval in (1, 49, 60_001):
        call = stub.WatchAllocation(pb.WatchAllocationRequest(min_interval_ms=interval), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await call.read()
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "min_interval_ms must be 0 (the default, 200) or between 50 and 60000" in (bad.value.details() or "")
    call = stub.WatchAllocation(pb.WatchAllocationRequest(instance_id="someone-else"), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await call.read()
    assert other.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_proxy_passes_the_stream_of_the_named_instance(harness: Harness) -> None:
    infra = harness.boot_infrastructure()
    a, b = infra.instances
    for instance in (a, b):
        watcher = watch(harness, infra.proxy.port, instance_id=instance.instance_id)
        try:
            assert (await watcher.first()).instance_id == instance.instance_id
            lease = await harness.acquire(instance.port, "summary")

            async def in_flight(w: Watcher = watcher) -> bool:
                return any(m.job_types["summary"].in_flight == 1 for _, m in w.messages)

            await eventually(in_flight, what="the proxied stream to show the new lease")
            await harness.release(instance.port, lease.lease_id, actual=pb.Usage(input_tokens=10))
        finally:
            watcher.close()
    anyone = watch(harness, infra.proxy.port)
    try:
        assert (await anyone.first()).instance_id in (a.instance_id, b.instance_id)
    finally:
        anyone.close()
    call = harness.stub(infra.proxy.port).WatchAllocation(pb.WatchAllocationRequest(instance_id="nobody"), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await call.read()
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_python_clients_follow_the_stream(harness: Harness) -> None:
    instance = harness.boot_instance(0, "default")
    with RateLimitClient(instance.address) as client:
        states = client.watch_allocation(min_interval_ms=50, timeout=30)
        assert next(states).instance_id == instance.instance_id
        lease = client.acquire("summary", timeout=10)
        assert any(state.job_types["summary"].in_flight == 1 for state in states)
        states.close()
        lease.release()
        ended = list(client.watch_allocation(min_interval_ms=60_000, timeout=1))
        assert len(ended) == 1, "the timeout ends the iteration quietly after the first message"
        with pytest.raises(InvalidRequest):
            next(client.watch_allocation(min_interval_ms=10))
    async with AsyncRateLimitClient(instance.address) as aclient:
        stream = aclient.watch_allocation(min_interval_ms=50, timeout=30)
        state = await anext(stream)
        await stream.aclose()
        assert state.instance_id == instance.instance_id
