"""The live allocation view: one message per change, built and serialised once for every stream.

The Acquire and Release paths only move the ChangeSignal's version. While anyone watches, one
builder task follows that signal and publishes the serialised GetAllocationResponse, at most once
per BUILD_INTERVAL_S however many changes came meanwhile, and only when its bytes differ from the
last ones. Each stream then writes the newest bytes at its own pace (rlcommon.latest.follow), so N
streams cost N writes, and a slow reader holds back nobody but itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from rlcommon.latest import Latest

from .capacity.changes import ChangeSignal
from .errors import InvalidArgument

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_MS = 200
MIN_INTERVAL_MS = 50
MAX_INTERVAL_MS = 60_000
# Half the shortest interval a stream may ask for: a message is at most this much older than the
# state when it is sent, and a busy instance builds at most 40 messages a second.
BUILD_INTERVAL_S: Final = MIN_INTERVAL_MS / 2 / 1000


def interval_s(min_interval_ms: int) -> float:
    """The pause between two messages a watcher asked for; 0 means the default."""
    if min_interval_ms == 0:
        return DEFAULT_INTERVAL_MS / 1000
    if not MIN_INTERVAL_MS <= min_interval_ms <= MAX_INTERVAL_MS:
        raise InvalidArgument(
            f"min_interval_ms must be 0 (the default, {DEFAULT_INTERVAL_MS}) or between "
            f"{MIN_INTERVAL_MS} and {MAX_INTERVAL_MS}, got {min_interval_ms}"
        )
    return min_interval_ms / 1000


class AllocationFeed:
    """The serialised allocation for every stream of the instance (they all ask for the same one:
    the request's only filter, instance_id, names this instance or none)."""

    def __init__(self, changes: ChangeSignal, build: Callable[[], bytes]) -> None:
        self._changes = changes
        self._build = build
        self._latest: Latest[bytes] = Latest()
        self._built_version = -1
        self._watchers = 0
        self._builder: asyncio.Task[None] | None = None

    @property
    def watchers(self) -> int:
        return self._watchers

    def subscribe(self) -> Latest[bytes]:
        """The message to follow; pair with unsubscribe(). The first watcher gets the state as it
        is now; later ones the newest message, which the builder replaces within BUILD_INTERVAL_S
        of a change."""
        if self._watchers == 0:
            self._refresh()
            self._builder = asyncio.create_task(self._follow_changes(), name="watch-builder")
        self._watchers += 1
        return self._latest

    def unsubscribe(self) -> None:
        self._watchers -= 1
        if self._watchers == 0 and self._builder is not None:
            self._builder.cancel()
            self._builder = None

    def _refresh(self) -> None:
        version = self._changes.version
        if version == self._built_version:
            return
        self._built_version = version
        data = self._build()
        if data != self._latest.value:
            self._latest.publish(data)

    async def _follow_changes(self) -> None:
        while True:
            await self._changes.wait(self._built_version)
            try:
                self._refresh()
            except Exception:
                # The streams keep the last message; the next change tries again.
                log.exception("building the WatchAllocation message failed")
            # Changes meanwhile are coalesced into the next build.
            await asyncio.sleep(BUILD_INTERVAL_S)
