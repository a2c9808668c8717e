"""On a Redis Cluster (--redis-cluster): each model's ledger lives in a slot of its own, so models
spread over the shards, and a Release publishes on its model's channel only."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import pytest
import redis

from rllocal.redis_cluster import LocalCluster, slot_of

from .harness import Harness, eventually

pytestmark = pytest.mark.parametrize("backend", ["cluster"], indirect=True)


def two_models_on_two_shards(cluster: LocalCluster) -> tuple[str, str]:
    """Two model names whose ledgers are served by different masters."""
    by_master: dict[int, str] = {}
    for i in range(100):
        name = f"model-{i}"
        by_master.setdefault(cluster.master_of("{rl:" + name + "}").port, name)
        if len(by_master) == 2:
            first, second = by_master.values()
            return first, second
    raise AssertionError("no two model names on two shards")


def config(models: tuple[str, str]) -> dict[str, Any]:
    return {
        "models": {name: {"tokens_per_minute": 1_000_000} for name in models},
        "escalation_order": list(models),
    }


async def test_two_models_land_on_two_shards_and_a_release_publishes_on_its_models_channel_only(
    harness: Harness,
) -> None:
    cluster = harness.redis_cluster
    assert cluster is not None
    a, b = two_models_on_two_shards(cluster)
    first = harness.boot_instance(0, "expiry", config((a, b)))
    second = harness.boot_instance(0, "expiry", config((a, b)))
    await eventually(lambda: harness.counts_instances(first.port, 2), what="two instances")

    # Each model's keys are on its own shard, and only there.
    for name, other in ((a, b), (b, a)):
        key = harness.key(name, "model", name)
        assert slot_of(key) == slot_of("{rl:" + name + "}")
        owner = cluster.master_of(key)
        assert owner.client().exists(key) == 1
        assert owner.port != cluster.master_of(harness.key(other, "model", other)).port

    listener = redis.Redis(host="127.0.0.1", port=cluster.masters[0].port)
    pubsub: Any = cast(Callable[..., Any], listener.pubsub)(ignore_subscribe_messages=True)
    channels = {name: harness.key(name, "events") for name in (a, b)}
    pubsub.subscribe(*channels.values())
    try:
        lease = await harness.acquire(first.port, "work", models=[a])
        assert lease.model_id == a
        # Released through the other instance: the lease id alone leads it to the model's ledger.
        await harness.release(second.port, lease.lease_id)
        heard: list[str] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not heard:
            message = pubsub.get_message(timeout=0.2)
            if message is not None and message["type"] == "message":
                heard.append(message["channel"].decode())
        assert heard == [channels[a]]
        # Anything else published for this Release would have arrived by now, behind it.
        stray = pubsub.get_message(timeout=1)
        assert stray is None or stray["channel"].decode() == channels[a]
        assert harness.ledger().open_leases() == []
    finally:
        pubsub.close()
        listener.close()
