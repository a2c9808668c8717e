"""The ledgers an instance talks to, for one Redis or for a Redis Cluster: the one place that knows
how the two differ.

One Redis: one Ledger under the hash tag `{PREFIX}`, every model in it, as ever.

Redis Cluster: one Ledger per model, under the hash tag `{PREFIX:MODEL}`, holding that model only,
so that models spread over the shards. Each is a whole ledger of its own in its slot (instances and
heartbeats, N, waiting flags, seq, events channel), so the same script runs unchanged: every script
call touches one slot, and group commit is per slot. Membership (register, heartbeat, reap,
unregister) makes one call per model, never one per lease; Acquire and Release go to their
model's ledger alone. A lease id ends with a tag of its model, so that any instance finds its
ledger in one step."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..types import ModelLimits, Outcome, ProviderFeedback, Snapshot, Usage
from .ledger import (
    AcquireCall,
    AcquireReply,
    FeedbackPolicy,
    Ledger,
    LedgerUnavailable,
    ModelLedgerUnavailable,
    ReleaseReply,
)

# A lease id's model tag follows its token after this (tokens are URL-safe base64: no dot).
_TAG_SEP = "."


class LedgerApi(Protocol):
    """What an instance asks of its ledger(s)."""

    @property
    def instance_id(self) -> str: ...

    def lease_suffix(self, model: str) -> str: ...

    def unreachable(self) -> list[str]:
        """The models whose ledger the last heartbeat could not reach while others answered."""
        ...

    async def load(self) -> None: ...

    async def register(self, models: dict[str, ModelLimits]) -> dict[str, Snapshot] | None: ...

    async def heartbeat(self) -> tuple[dict[str, Snapshot], bool]: ...

    async def reap(self) -> bool: ...

    async def unregister(self) -> bool: ...

    async def set_waiting(self, model: str, waiting: bool) -> Snapshot: ...

    async def acquire(self, request: AcquireCall) -> AcquireReply: ...

    async def release(
        self, lease_id: str, outcome: Outcome, usage: Usage, provider: ProviderFeedback | None = None
    ) -> ReleaseReply: ...

    async def expire(self, lease_id: str) -> ReleaseReply: ...

    async def lease_use(self, lease_id: str) -> tuple[str, str] | None: ...

    async def extend(self, lease_id: str, ttl_ms: int) -> tuple[str, int]: ...


def model_tag(model: str) -> str:
    """A short, stable tag of a model name for lease ids (any characters may be in a name)."""
    return hashlib.sha256(model.encode()).hexdigest()[:8]


def cluster_prefix(prefix: str, model: str) -> str:
    """The hash tag's text of a model's ledger on a cluster: its keys are under {PREFIX:MODEL}."""
    return f"{prefix}:{model}"


class ModelLedgers:
    """A ledger per model (Redis Cluster): routes each model's calls to its own ledger and fans
    membership out to all of them."""

    def __init__(self, ledgers: dict[str, Ledger]) -> None:
        self._ledgers = ledgers
        self._by_tag: dict[str, Ledger] = {}
        for name, ledger in ledgers.items():
            tag = model_tag(name)
            if tag in self._by_tag:
                clash = next(n for n, lg in ledgers.items() if lg is self._by_tag[tag])
                raise ValueError(f"models {clash!r} and {name!r} have the same lease tag {tag}: rename one")
            self._by_tag[tag] = ledger
        self._instance_id = next(iter(ledgers.values())).instance_id
        # Ledgers whose maintenance is waiting (heartbeat said so), and those this instance has left.
        self._maintenance: set[str] = set()
        self._left: set[str] = set()
        self._unreachable: list[str] = []

    @property
    def instance_id(self) -> str:
        return self._instance_id

    def lease_suffix(self, model: str) -> str:
        return _TAG_SEP + model_tag(model)

    def unreachable(self) -> list[str]:
        return list(self._unreachable)

    def _of_lease(self, lease_id: str) -> Ledger | None:
        _, sep, tag = lease_id.rpartition(_TAG_SEP)
        return self._by_tag.get(tag) if sep else None

    async def _each(self, call: Callable[[str, Ledger], Awaitable[Any]]) -> list[Any]:
        return list(await asyncio.gather(*(call(name, ledger) for name, ledger in self._ledgers.items())))

    async def load(self) -> None:
        await self._each(lambda _, ledger: ledger.load())

    async def register(self, models: dict[str, ModelLimits]) -> dict[str, Snapshot] | None:
        async def one(name: str, ledger: Ledger) -> dict[str, Snapshot]:
            # A model's ledger still closing an earlier registration of this id answers busy: only
            # that one is asked again.
            while (states := await ledger.register({name: models[name]})) is None:
                pass
            return states

        self._left.clear()
        return {k: v for states in await self._each(one) for k, v in states.items()}

    async def heartbeat(self) -> tuple[dict[str, Snapshot], bool]:
        """A shard that is down fails the heartbeat of its models only: the others keep this
        instance alive and serving (unreachable() names them). Fails when no model's ledger answers."""
        replies = await asyncio.gather(
            *(ledger.heartbeat() for ledger in self._ledgers.values()), return_exceptions=True
        )
        states: dict[str, Snapshot] = {}
        failed: dict[str, BaseException] = {}
        for name, reply in zip(self._ledgers, replies, strict=True):
            if isinstance(reply, BaseException):
                failed[name] = reply
                continue
            snaps, more = reply
            states.update(snaps)
            if more:
                self._maintenance.add(name)
        self._unreachable = sorted(failed)
        for error in failed.values():
            # A ledger that no longer knows this instance (its shard came back empty) re-registers
            # it everywhere; anything but Redis failing is a bug, raised as is.
            if not isinstance(error, LedgerUnavailable):
                raise error
        if failed and not states:
            raise LedgerUnavailable(f"no model's ledger answers: {next(iter(failed.values()))}")
        return states, bool(self._maintenance)

    async def reap(self) -> bool:
        waiting = sorted(self._maintenance)
        more = await asyncio.gather(*(self._ledgers[name].reap() for name in waiting))
        self._maintenance.difference_update(name for name, m in zip(waiting, more, strict=True) if not m)
        return bool(self._maintenance)

    async def unregister(self) -> bool:
        left = [name for name in self._ledgers if name not in self._left]
        done = await asyncio.gather(*(self._ledgers[name].unregister() for name in left))
        self._left.update(name for name, d in zip(left, done, strict=True) if d)
        return len(self._left) == len(self._ledgers)

    async def set_waiting(self, model: str, waiting: bool) -> Snapshot:
        return await self._ledgers[model].set_waiting(model, waiting)

    async def acquire(self, request: AcquireCall) -> AcquireReply:
        try:
            return await self._ledgers[request.model].acquire(request)
        except LedgerUnavailable as e:
            # Only this model's shard is known to have failed.
            raise ModelLedgerUnavailable(str(e)) from e

    async def release(
        self, lease_id: str, outcome: Outcome, usage: Usage, provider: ProviderFeedback | None = None
    ) -> ReleaseReply:
        ledger = self._of_lease(lease_id)
        if ledger is None:
            return ReleaseReply("unknown")
        return await ledger.release(lease_id, outcome, usage, provider)

    async def expire(self, lease_id: str) -> ReleaseReply:
        ledger = self._of_lease(lease_id)
        if ledger is None:
            return ReleaseReply("unknown")
        return await ledger.expire(lease_id)

    async def lease_use(self, lease_id: str) -> tuple[str, str] | None:
        ledger = self._of_lease(lease_id)
        return None if ledger is None else await ledger.lease_use(lease_id)

    async def extend(self, lease_id: str, ttl_ms: int) -> tuple[str, int]:
        ledger = self._of_lease(lease_id)
        return ("unknown", 0) if ledger is None else await ledger.extend(lease_id, ttl_ms)


@dataclass
class Backend:
    """The ledger(s), the clients they use and the event channels to follow."""

    ledger: LedgerApi
    channels: list[str]
    redis: Redis | RedisCluster
    events_redis: Redis | RedisCluster

    async def aclose(self) -> None:
        await self.redis.aclose()
        await self.events_redis.aclose()


def connect(
    url: str,
    cluster: bool,
    prefix: str,
    instance_id: str,
    models: Iterable[str],
    stale_after_ms: int,
    observe: Callable[[str, float], None] | None,
    feedback: FeedbackPolicy,
) -> Backend:
    # Script calls take well under a millisecond in Redis: a call that hangs means Redis is gone.
    # One retry at once on a new connection covers a connection a restarted Redis dropped; more,
    # with backoff, would only hold callers while Redis is down, where they must fail at once.
    # The subscriber blocks on reads by design, so it gets its own client with no read timeout.
    # No retries: a subscriber that reconnects by itself would miss what was published meanwhile
    # without knowing it; the event stream resubscribes and re-reads the whole state instead.
    if not cluster:
        redis = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, retry=Retry(NoBackoff(), 1))
        events = Redis.from_url(url, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))
        ledger = Ledger(redis, prefix, instance_id, stale_after_ms, observe, feedback)
        return Backend(ledger, [ledger.channel], redis, events)
    # A cluster client also follows the shards: on a moved slot or a lost node it reads the
    # cluster's layout again, once, then fails the call.
    cluster_redis = RedisCluster.from_url(
        url, socket_connect_timeout=2, socket_timeout=5, retry=Retry(NoBackoff(), 1), require_full_coverage=False
    )
    cluster_events = RedisCluster.from_url(
        url, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0), require_full_coverage=False
    )
    ledgers = {
        name: Ledger(cluster_redis, cluster_prefix(prefix, name), instance_id, stale_after_ms, observe, feedback)
        for name in models
    }
    return Backend(ModelLedgers(ledgers), [lg.channel for lg in ledgers.values()], cluster_redis, cluster_events)
