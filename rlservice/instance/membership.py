"""Membership in the ledger: registration, heartbeats, removal of stale instances, the event
channel, window boundaries and this instance's waiting flags."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from ..backend.ledger import LedgerUnavailable, NotRegistered
from ..backend.ledgers import LedgerApi
from ..backend.wire import Event
from ..capacity.state import ModelState
from ..capacity.windows import next_minute_boundary
from ..types import Snapshot
from .local import LocalState

log = logging.getLogger(__name__)

# Redis time moves on by a little after a boundary before the new window is read.
_BOUNDARY_SLACK_S = 0.02


class Membership:
    def __init__(self, local: LocalState, ledger: LedgerApi) -> None:
        self._local = local
        self._ledger = ledger
        self._boundary: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._reregistering: asyncio.Task[None] | None = None
        self._reaping: asyncio.Task[None] | None = None
        self._closing = False
        self.registered = False
        # Per model: the waiting flag wanted, the one the ledger holds, and whether a sync runs.
        self._waiting_wanted: dict[str, bool] = {}
        self._waiting_sent: dict[str, bool] = {}
        self._waiting_sync: dict[str, asyncio.Task[None]] = {}

    # ----- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self._ledger.load()
        await self._register()

    async def close(self) -> None:
        self._closing = True
        if self._boundary is not None:
            self._boundary.cancel()
        self._local.pauses.close()
        self._local.refills.close()
        tasks = [*self._background, *(t for t in (self._reregistering, self._reaping) if t is not None)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.registered:
            self.registered = False
            with contextlib.suppress(LedgerUnavailable, NotRegistered):
                while not await self._ledger.unregister():
                    pass

    async def _register(self) -> None:
        # Whatever this process held in the ledger is closed by a (re-)registration.
        self._local.drain_leases()
        self._waiting_sent.clear()
        while (states := await self._ledger.register(self._local.limits)) is None:
            pass
        self.registered = True
        self._apply_states(states)
        for name, wanted in self._waiting_wanted.items():
            if wanted:
                self.sync_waiting(name)

    async def heartbeat(self) -> None:
        try:
            states, more = await self._ledger.heartbeat()
        except NotRegistered:
            log.warning("the ledger had declared this instance stale; registering again")
            await self._register()
            return
        self.registered = True
        self._apply_states(states)
        if more:
            self._reap()

    def _reap(self) -> None:
        """Removes stale instances and frees expired leases one bounded step a call, back to back,
        until none is left."""
        if self._reaping is None or self._reaping.done():
            self._reaping = asyncio.ensure_future(self._reap_all())

    async def _reap_all(self) -> None:
        try:
            while await self._ledger.reap():
                pass
        except LedgerUnavailable as e:
            log.warning("maintenance of the ledger paused: %s", e)

    def _apply_states(self, states: dict[str, Snapshot]) -> None:
        self._local.apply_states(states)
        self._schedule_boundary()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def reregister(self) -> None:
        # Leaving on purpose publishes this instance as gone too; that must not bring it back.
        self.registered = False
        if self._closing:
            return
        if self._reregistering is None or self._reregistering.done():
            self._reregistering = asyncio.ensure_future(self._register_quietly())

    async def _register_quietly(self) -> None:
        try:
            await self._register()
        except LedgerUnavailable as e:
            log.warning("cannot register again yet: %s", e)

    # ----- window boundaries -----------------------------------------------------------------

    def _schedule_boundary(self) -> None:
        """Wakes at the next minute boundary on Redis time: new windows, capacity comes back."""
        if self._boundary is not None:
            self._boundary.cancel()
        clock = self._local.clock
        at = clock.loop_time(next_minute_boundary(clock.now_ms())) + _BOUNDARY_SLACK_S
        self._boundary = asyncio.get_running_loop().call_at(at, self._on_boundary)

    def _on_boundary(self) -> None:
        self._boundary = None
        self.spawn(self.refresh())

    async def refresh(self) -> None:
        try:
            await self.heartbeat()
        except LedgerUnavailable as e:
            log.warning("cannot read the ledger: %s", e)
            self._schedule_boundary()

    # ----- events ----------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """An event published by another instance's call (or by none)."""
        local = self._local
        if local.instance_id in event.gone:
            self.reregister()
            return
        now = local.clock.now_ms()
        touched = []
        for name, state in event.states.items():
            model = local.models.get(name)
            if model is not None:
                model.apply(Snapshot.from_reply(event.seq, now, state), own=event.owner == local.instance_id)
                touched.append(model)
        for closed in event.closed:
            if closed.owner == local.instance_id:
                local.settle_closed(closed)
        for model in touched:
            local.pump(model)

    # ----- waiting flags ---------------------------------------------------------------------

    def waiters_changed(self, model: ModelState) -> asyncio.Task[None] | None:
        """Called when the model's local waiters may have gone from none to some or back; returns
        the recording of the flag in the ledger while one runs."""
        waiting = any(len(q) for q in model.queues.values())
        if self._waiting_wanted.get(model.name, False) != waiting:
            self._waiting_wanted[model.name] = waiting
            self.sync_waiting(model.name)
        return self._waiting_sync.get(model.name)

    def sync_waiting(self, name: str) -> None:
        if name not in self._waiting_sync and self.registered:
            self._waiting_sync[name] = self.spawn(self._sync_waiting(name))

    async def _sync_waiting(self, name: str) -> None:
        """Brings the ledger's flag to the wanted one; one call a change, never two at once."""
        model = self._local.models[name]
        try:
            while (wanted := self._waiting_wanted.get(name, False)) != self._waiting_sent.get(name, False):
                snap = await self._ledger.set_waiting(name, wanted)
                self._waiting_sent[name] = wanted
                model.apply(snap, own=True)
        except NotRegistered:
            self.reregister()
        except LedgerUnavailable as e:
            log.warning("cannot record waiters for %s: %s", name, e, extra={"model": name})
        finally:
            del self._waiting_sync[name]
        self._local.pump(model)
