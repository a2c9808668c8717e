"""Follows the ledger's event channel: every instance applies what the others changed."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from .ledger import REDIS_ERRORS, LedgerUnavailable
from .wire import Event, parse_event

log = logging.getLogger(__name__)

RETRY_S = 0.5


class EventStream:
    def __init__(
        self,
        redis: Redis | RedisCluster,
        channel: str,
        origin: str,
        on_event: Callable[[Event], None],
        on_resubscribed: Callable[[], Awaitable[None]],
        on_lost: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._redis = redis
        self._channel = channel
        self._own = origin.encode()
        self._on_event = on_event
        self._on_resubscribed = on_resubscribed
        self._on_lost = on_lost
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribes before returning, so that nothing published after this is missed."""
        try:
            pubsub = await self._subscribe(refresh=False)
        except REDIS_ERRORS as e:
            # The caller retries on this, as it does for the ledger's own calls.
            raise LedgerUnavailable(f"redis: {e}") from e
        self._task = asyncio.create_task(self._follow(pubsub), name="ledger-events")

    async def _subscribe(self, refresh: bool) -> Any:
        """A subscription to the channel; on a cluster, on the node serving the channel's slot, as
        the cluster's layout is known (read again after a loss: a replica may have taken over)."""
        if isinstance(self._redis, RedisCluster):
            if refresh:
                await self._redis.nodes_manager.initialize()
            else:
                await self._redis.initialize()
        # redis-py leaves PubSub.aclose unannotated.
        pubsub: Any = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._channel)
        except BaseException:
            await pubsub.aclose()
            raise
        return pubsub

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _follow(self, pubsub: Any) -> None:
        while True:
            try:
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        self._deliver(message["data"])
            except REDIS_ERRORS as e:
                log.warning("event channel lost (%s); resubscribing", e)
                if self._on_lost is not None:
                    await self._on_lost()
            await pubsub.aclose()
            await asyncio.sleep(RETRY_S)
            try:
                pubsub = await self._subscribe(refresh=True)
                # Whatever was published while away is lost: read the whole state again.
                await self._on_resubscribed()
            except REDIS_ERRORS as e:
                log.warning("cannot resubscribe yet: %s", e)

    def _deliver(self, data: bytes) -> None:
        """An event's first line is its origin; this instance's own calls already applied what theirs say."""
        origin, _, body = data.partition(b"\n")
        if origin == self._own:
            return
        try:
            event = parse_event(body)
        except (ValueError, IndexError, struct.error):
            log.error("ignoring a malformed event: %r", data[:200])
            return
        self._on_event(event)
