"""The live view's coalescing, driven by a real ChangeSignal on the event loop."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from rlservice.capacity.changes import ChangeSignal
from rlservice.errors import InvalidArgument
from rlservice.watch import interval_s, ticks


@pytest.mark.parametrize(("asked", "seconds"), [(0, 0.2), (50, 0.05), (1234, 1.234), (60_000, 60.0)])
def test_interval_bounds(asked: int, seconds: float) -> None:
    assert interval_s(asked) == seconds


@pytest.mark.parametrize("asked", [1, 49, 60_001])
def test_interval_out_of_bounds_says_what_to_fix(asked: int) -> None:
    with pytest.raises(InvalidArgument, match=f"between 50 and 60000, got {asked}"):
        interval_s(asked)


async def stays_blocked(pending: asyncio.Task[None]) -> bool:
    # Without a notify nothing can wake it; a few loop turns show it did not return on its own.
    for _ in range(20):
        await asyncio.sleep(0)
    return not pending.done()


async def test_ticks_at_once_then_only_after_a_change() -> None:
    changes = ChangeSignal()
    stream = ticks(changes, 0.0)
    await anext(stream)
    pending = asyncio.ensure_future(anext(stream))
    assert await stays_blocked(pending)
    changes.notify()
    await asyncio.wait_for(pending, 5)
    await stream.aclose()


async def test_many_changes_within_the_interval_make_one_tick_after_it() -> None:
    changes = ChangeSignal()
    interval = 0.2
    loop = asyncio.get_running_loop()
    stream = ticks(changes, interval)
    started = loop.time()
    await anext(stream)
    for _ in range(1000):
        changes.notify()
    await asyncio.wait_for(anext(stream), 5)
    # Timers may fire up to the clock's resolution early.
    assert loop.time() - started >= interval * 0.99
    pending = asyncio.ensure_future(anext(stream))
    assert await stays_blocked(pending), "the 1000 changes were all covered by the one tick"
    pending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pending


async def test_a_reader_that_stops_never_holds_back_the_notifier() -> None:
    changes = ChangeSignal()
    stream = ticks(changes, 0.0)
    await anext(stream)
    # Nobody asks for the next tick: notify() only counts.
    for _ in range(100_000):
        changes.notify()
    assert changes.version == 100_000
    await asyncio.wait_for(anext(stream), 5)
    pending = asyncio.ensure_future(anext(stream))
    assert await stays_blocked(pending), "one tick for all the changes it missed"
    pending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pending
