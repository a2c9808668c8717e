"""Shared upstream WatchAllocation streams: one per target, request and metadata, whatever the
number of clients that follow it.

The first client that asks opens the target's stream; the others join it. Every message from the
target is kept as the newest (rlcommon.latest), and each client writes it at its own pace. When the
last client leaves, the target's stream is cancelled; when the target ends it, every client ends
with its status.
"""

from __future__ import annotations

import asyncio

from grpc import aio

from rlcommon.latest import Latest

from .targets import Target

Metadata = tuple[tuple[str, str | bytes], ...] | None
Key = tuple[str, bytes, Metadata]


class SharedWatch:
    """One target's stream. `initial` holds its initial metadata once the first message came,
    `trailing` its trailing metadata once it ended."""

    def __init__(self, hub: WatchHub, key: Key, target: Target, request: bytes, metadata: Metadata) -> None:
        self.latest: Latest[bytes] = Latest()
        self.initial: aio.Metadata | None = None
        self.trailing: aio.Metadata | None = None
        self.clients = 0
        self._hub = hub
        self.key = key
        self._task = asyncio.create_task(self._pump(target, request, metadata), name=f"watch {target.address}")

    async def _pump(self, target: Target, request: bytes, metadata: Metadata) -> None:
        # No deadline: each client's own deadline ends its stream, and the last to leave this one.
        call = target.watch_allocation(request, metadata=metadata)
        try:
            async for reply in call:
                if self.initial is None:
                    self.initial = await call.initial_metadata()
                self.latest.publish(reply)
            self.trailing = await call.trailing_metadata()
            self.latest.close()
        except aio.AioRpcError as err:
            self.latest.close(err)
        finally:
            call.cancel()
            self._hub.ended(self)

    def cancel(self) -> None:
        self._task.cancel()


class WatchHub:
    """The open shared streams, by target address, request bytes and the metadata sent with them."""

    def __init__(self) -> None:
        self._streams: dict[Key, SharedWatch] = {}

    @property
    def upstreams(self) -> int:
        return len(self._streams)

    def join(self, target: Target, request: bytes, metadata: Metadata) -> SharedWatch:
        key = (target.address, request, metadata)
        shared = self._streams.get(key)
        if shared is None:
            shared = self._streams[key] = SharedWatch(self, key, target, request, metadata)
        shared.clients += 1
        return shared

    def leave(self, shared: SharedWatch) -> None:
        shared.clients -= 1
        if shared.clients == 0:
            self.ended(shared)
            shared.cancel()

    def ended(self, shared: SharedWatch) -> None:
        """Forgets `shared`, so that the next client opens a new stream."""
        if self._streams.get(shared.key) is shared:
            del self._streams[shared.key]
