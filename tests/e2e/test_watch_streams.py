"""Many WatchAllocation streams: the cap on an instance and on the proxy, one message for all, one
upstream stream per proxy, and a cancel storm."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2

from rllocal.processes import free_port
from rlproto import ratelimit_pb2 as pb
from rlproto import ratelimit_pb2_grpc as pb_grpc

from .harness import Harness, eventually, health
from .test_metrics import scraped, value

Call = grpc.aio.UnaryStreamCall[pb.WatchAllocationRequest, pb.GetAllocationResponse]


class Follower:
    """One stream read in a task: its newest message, and how it ended."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.latest: pb.GetAllocationResponse | None = None
        self.error: grpc.aio.AioRpcError | None = None
        self.closed = False
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.call:
                self.latest = message
        except grpc.aio.AioRpcError as e:
            self.error = e
        except asyncio.CancelledError:
            # A call cancelled here ends its reader so.
            if not self.closed:
                raise

    def close(self) -> None:
        self.closed = True
        self.call.cancel()


@contextlib.asynccontextmanager
async def channels(address: str, count: int) -> AsyncIterator[list[pb_grpc.RateLimiterAsyncStub]]:
    opened = [grpc.aio.insecure_channel(address) for _ in range(count)]
    try:
        yield [pb_grpc.RateLimiterStub(c) for c in opened]
    finally:
        for c in opened:
            await c.close(None)


def follow(stub: pb_grpc.RateLimiterAsyncStub, min_interval_ms: int = 50) -> Follower:
    return Follower(stub.WatchAllocation(pb.WatchAllocationRequest(min_interval_ms=min_interval_ms), timeout=120))


async def all_started(followers: list[Follower]) -> bool:
    return all(f.latest is not None for f in followers)


async def refused(stub: pb_grpc.RateLimiterAsyncStub) -> grpc.aio.AioRpcError:
    call = stub.WatchAllocation(pb.WatchAllocationRequest(min_interval_ms=50), timeout=30)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call.read()
    return error.value


async def stream_count(metrics_port: int, name: str) -> float:
    return value(await scraped(metrics_port), name)


async def test_streams_past_the_cap_are_refused_until_others_close(harness: Harness) -> None:
    metrics = free_port()
    flags = ["--max-watch-streams", "5", "--metrics-port", str(metrics)]
    instance = harness.boot_instance(0, "default", extra_args=flags)
    async with channels(instance.address, 2) as stubs:
        followers = [follow(stubs[n % 2]) for n in range(5)]
        await eventually(lambda: all_started(followers), timeout=30, what="five streams to start")
        error = await refused(stubs[0])
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = error.details() or ""
        assert "already serves 5 WatchAllocation streams" in details and "--max-watch-streams" in details, details
        assert value(await scraped(metrics), "rlservice_watch_refused_total") == 1
        for f in followers[:2]:
            f.close()

        async def two_freed() -> bool:
            return await stream_count(metrics, "rlservice_watch_streams") == 3

        await eventually(two_freed, timeout=30, what="the two closed streams to free their slots")
        again = [follow(stubs[1]) for _ in range(2)]
        await eventually(lambda: all_started(again), timeout=30, what="two new streams in the freed slots")
        assert (await refused(stubs[1])).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for f in followers + again:
            f.close()
        await asyncio.gather(*(f.task for f in followers + again))
        assert all(f.error is None for f in followers + again)

    async def none_open() -> bool:
        return await stream_count(metrics, "rlservice_watch_streams") == 0

    await eventually(none_open, timeout=30, what="every slot to be free")


async def test_many_streams_following_one_change_all_receive_the_same_latest_state(harness: Harness) -> None:
    instance = harness.boot_instance(0, "default")
    async with channels(instance.address, 4) as stubs:
        # Different intervals too: each keeps its own pace, all end on the same message.
        followers = [follow(stubs[n % 4], min_interval_ms=50 + 50 * (n % 3)) for n in range(200)]
        try:
            await eventually(lambda: all_started(followers), timeout=60, what="200 streams to start")
            lease = await harness.acquire(instance.port, "summary")

            async def all_see(in_flight: int) -> bool:
                return all(
                    f.latest is not None and f.latest.job_types["summary"].in_flight == in_flight for f in followers
                )

            await eventually(lambda: all_see(1), timeout=30, what="every stream to show the lease")
            await harness.release(instance.port, lease.lease_id, actual=pb.Usage(input_tokens=100))
            await eventually(lambda: all_see(0), timeout=30, what="every stream to show the release")
            newest = await harness.allocation(instance.port)

            async def all_newest() -> bool:
                return all(f.latest == newest for f in followers)

            await eventually(all_newest, timeout=30, what="every stream to hold the instance's current state")
            assert all(f.error is None for f in followers)
        finally:
            for f in followers:
                f.close()


async def test_a_proxy_opens_one_upstream_stream_for_all_its_clients(harness: Harness) -> None:
    instance_metrics, proxy_metrics = free_port(), free_port()
    instance = harness.boot_instance(0, "default", extra_args=["--metrics-port", str(instance_metrics)])
    proxy = harness.boot_proxy(
        [instance.port], extra_args=["--metrics-port", str(proxy_metrics), "--max-watch-streams", "60"]
    )
    async with channels(proxy.address, 3) as stubs:
        followers = [follow(stubs[n % 3]) for n in range(60)]
        await eventually(lambda: all_started(followers), timeout=60, what="60 proxied streams to start")
        assert await stream_count(instance_metrics, "rlservice_watch_streams") == 1
        proxy_side = await scraped(proxy_metrics)
        assert value(proxy_side, "rlproxy_watch_streams") == 60
        assert value(proxy_side, "rlproxy_watch_upstreams") == 1
        error = await refused(stubs[0])
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "this proxy already serves 60 WatchAllocation streams" in (error.details() or "")

        lease = await harness.acquire(instance.port, "summary")

        async def all_see_the_lease() -> bool:
            return all(f.latest is not None and f.latest.job_types["summary"].in_flight == 1 for f in followers)

        await eventually(all_see_the_lease, timeout=30, what="every client to see the lease")
        await harness.release(instance.port, lease.lease_id, actual=pb.Usage(input_tokens=100))
        for f in followers:
            f.close()

        async def upstream_closed() -> bool:
            return await stream_count(instance_metrics, "rlservice_watch_streams") == 0

        await eventually(upstream_closed, timeout=30, what="the last client leaving to close the upstream stream")


async def test_clients_of_a_shared_stream_get_its_end_status(harness: Harness) -> None:
    instance = harness.boot_instance(0, "default")
    proxy = harness.boot_proxy([instance.port])
    async with channels(proxy.address, 2) as stubs:
        followers = [follow(stubs[n % 2]) for n in range(20)]
        await eventually(lambda: all_started(followers), timeout=60, what="20 proxied streams to start")
        harness.kill_instance(instance.port)
        await asyncio.wait_for(asyncio.gather(*(f.task for f in followers)), 30)
        codes = {f.error.code() if f.error is not None else grpc.StatusCode.OK for f in followers}
        assert codes == {grpc.StatusCode.UNAVAILABLE}, codes


async def test_a_cancel_storm_leaves_the_instance_serving_with_no_stream_left(harness: Harness) -> None:
    metrics = free_port()
    instance = harness.boot_instance(0, "default", extra_args=["--metrics-port", str(metrics)])
    async with channels(instance.address, 5) as stubs:
        for _ in range(2):
            storm = [follow(stubs[n % 5]) for n in range(400)]
            await eventually(lambda s=storm: all_started(s), timeout=90, what="400 streams to start")  # type: ignore[misc]
            for f in storm:
                f.close()
            await asyncio.gather(*(f.task for f in storm))
        # Opened and cancelled at once, before any message.
        never_read = [follow(stubs[n % 5]) for n in range(400)]
        await asyncio.sleep(0)
        for f in never_read:
            f.close()
        await asyncio.gather(*(f.task for f in never_read))

    async def none_open() -> bool:
        return await stream_count(metrics, "rlservice_watch_streams") == 0

    await eventually(none_open, timeout=60, what="the stream count back at 0")
    assert await health(instance.port) == health_pb2.HealthCheckResponse.SERVING
    async with channels(instance.address, 1) as stubs:
        after = follow(stubs[0])
        await eventually(lambda: all_started([after]), timeout=30, what="a stream after the storm")
        after.close()
