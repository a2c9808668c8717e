"""A master of the Redis Cluster killed: the models on its shard answer UNAVAILABLE and health says
which, an Acquire that may escalate goes on to the next model, the other models keep granting the
whole time, and once its replica is promoted everything serves again, with no restart of the
instance."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from rllocal.redis_cluster import LocalCluster, NodeSettings

from .harness import Harness, RedisServer, eventually, health
from .test_cluster import config, two_models_on_two_shards

SERVICE = "ratelimit.v1.RateLimiter"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def model_health_is(port: int, model: str, status: int) -> bool:
    return await health(port, f"{SERVICE}/{model}") == status


async def grants(h: Harness, port: int, model: str) -> grpc.StatusCode:
    """One Acquire and Release on the model: OK, or the Acquire's error code."""
    try:
        lease = await h.acquire(port, "work", models=[model], timeout=10)
    except grpc.aio.AioRpcError as e:
        return e.code()
    await h.release(port, lease.lease_id)
    return grpc.StatusCode.OK


async def keep_granting(h: Harness, port: int, model: str, stop: asyncio.Event) -> tuple[int, list[str]]:
    """Acquire and Release back to back until stopped: how many went through, and what failed."""
    done, failed = 0, []
    while not stop.is_set():
        code = await grants(h, port, model)
        if code is grpc.StatusCode.OK:
            done += 1
        else:
            failed.append(code.name)
    return done, failed


async def test_a_killed_master_stops_its_models_only_until_its_replica_takes_over(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # A replica is promoted once its master has been unreachable this long, and more: time enough to
    # see the shard's models refused first.
    cluster = LocalCluster(tmp_path / "cluster", replicas=True, settings=NodeSettings(node_timeout_ms=3000))
    cluster.start()
    h = Harness(redis_server, tmp_path, redis_cluster=cluster)
    try:
        down, up = two_models_on_two_shards(cluster)
        port = h.boot_instance(0, "expiry", config((down, up))).port
        assert await grants(h, port, down) is grpc.StatusCode.OK
        await eventually(lambda: model_health_is(port, down, SERVING), what="the model's health")
        stop = asyncio.Event()
        others = asyncio.ensure_future(keep_granting(h, port, up, stop))
        await asyncio.sleep(0.5)
        cluster.master_of("{rl:" + down + "}").stop()
        killed_at = time.monotonic()

        async def refused() -> bool:
            return await grants(h, port, down) is grpc.StatusCode.UNAVAILABLE

        await eventually(refused, timeout=10, what="the killed shard's model to answer UNAVAILABLE")
        # An Acquire that may escalate goes on past the shard that is down to a model on one that
        # answers; one that may not says which shard failed.
        lease = await h.acquire(port, "work", models=[down, up], timeout=10)
        assert (lease.model_id, list(lease.models_tried)) == (up, [down, up])
        await h.release(port, lease.lease_id)
        with pytest.raises(grpc.aio.AioRpcError) as alone:
            await h.acquire(port, "work", models=[down], timeout=10)
        assert alone.value.code() is grpc.StatusCode.UNAVAILABLE
        assert f"the Redis shard of model {down!r} is unreachable" in (alone.value.details() or "")
        await eventually(lambda: model_health_is(port, down, NOT_SERVING), timeout=10, what="health to name it")
        assert await model_health_is(port, up, SERVING)
        assert await health(port, SERVICE) == SERVING, "the instance serves the other shards' models"

        async def serves_again() -> bool:
            return await grants(h, port, down) is grpc.StatusCode.OK

        await eventually(serves_again, timeout=60, what="the replica to take over")
        recovered_s = time.monotonic() - killed_at
        await eventually(lambda: model_health_is(port, down, SERVING), timeout=10, what="the model serving again")
        stop.set()
        done, failed = await others
        assert failed == [], f"the model on the other shard failed {len(failed)} times: {failed[:5]}"
        assert done > 0
        print(f"served again {recovered_s:.1f}s after the kill; {done} jobs on the other shard meanwhile, none failed")
    finally:
        h.teardown_infrastructure()
        await h.close_channels()
        cluster.stop()
