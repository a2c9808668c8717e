"""The live view's pieces on a real event loop: interval bounds, the shared newest value, the write
budget and the feed that builds one message for every stream."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from rlcommon.latest import Latest, follow
from rlcommon.watch_cap import StreamCap
from rlcommon.write_budget import WriteBudget
from rlservice.capacity.changes import ChangeSignal
from rlservice.errors import InvalidArgument
from rlservice.watch import AllocationFeed, interval_s

ROOMY = WriteBudget(1_000_000)


@pytest.mark.parametrize(("asked", "seconds"), [(0, 0.2), (50, 0.05), (1234, 1.234), (60_000, 60.0)])
def test_interval_bounds(asked: int, seconds: float) -> None:
    assert interval_s(asked) == seconds


@pytest.mark.parametrize("asked", [1, 49, 60_001])
def test_interval_out_of_bounds_says_what_to_fix(asked: int) -> None:
    with pytest.raises(InvalidArgument, match=f"between 50 and 60000, got {asked}"):
        interval_s(asked)


async def stays_blocked(pending: asyncio.Future[Any]) -> bool:
    # Without a publish nothing can wake it; a few loop turns show it did not return on its own.
    for _ in range(20):
        await asyncio.sleep(0)
    return not pending.done()


async def test_a_follower_gets_the_newest_value_never_a_backlog() -> None:
    latest: Latest[int] = Latest()
    stream = follow(latest, 0.0, ROOMY)
    pending = asyncio.ensure_future(anext(stream))
    assert await stays_blocked(pending), "nothing published yet"
    latest.publish(1)
    assert await asyncio.wait_for(pending, 5) == 1
    for n in range(2, 1000):
        latest.publish(n)
    assert await asyncio.wait_for(anext(stream), 5) == 999
    pending = asyncio.ensure_future(anext(stream))
    assert await stays_blocked(pending), "one value for all it missed"
    pending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pending


async def test_many_publishes_within_the_interval_make_one_value_after_it() -> None:
    latest: Latest[int] = Latest()
    latest.publish(0)
    loop = asyncio.get_running_loop()
    stream = follow(latest, 0.2, ROOMY)
    started = loop.time()
    await anext(stream)
    for n in range(1000):
        latest.publish(n)
    assert await asyncio.wait_for(anext(stream), 5) == 999
    # Timers may fire up to the clock's resolution early.
    assert loop.time() - started >= 0.2 * 0.99


async def test_a_reader_leaving_does_not_cancel_the_others_wake_up() -> None:
    latest: Latest[int] = Latest()
    leaving = asyncio.ensure_future(latest.newer(0))
    staying = asyncio.ensure_future(latest.newer(0))
    await asyncio.sleep(0)
    leaving.cancel()
    latest.publish(7)
    assert await asyncio.wait_for(staying, 5) == 1


async def test_closing_ends_the_followers_after_the_newest_value() -> None:
    latest: Latest[str] = Latest()
    latest.publish("last")
    latest.close()
    assert [v async for v in follow(latest, 0.0, ROOMY)] == ["last"]
    failed: Latest[str] = Latest()
    failed.close(RuntimeError("upstream ended"))
    with pytest.raises(RuntimeError, match="upstream ended"):
        await anext(follow(failed, 0.0, ROOMY))


async def test_the_budget_lets_writers_through_in_turn_at_its_rate() -> None:
    budget = WriteBudget(1000)
    loop = asyncio.get_running_loop()
    started = loop.time()
    order: list[int] = []

    async def writer(n: int) -> None:
        await budget.turn()
        order.append(n)

    await asyncio.wait_for(asyncio.gather(*(writer(n) for n in range(100))), 10)
    # 10 at once (10 ms worth), the other 90 at 1000 a second.
    assert loop.time() - started >= 0.08
    assert order == list(range(100)), "first come, first served"


async def test_a_writer_that_leaves_while_waiting_costs_no_turn() -> None:
    budget = WriteBudget(100)
    await budget.turn()
    gone = asyncio.ensure_future(budget.turn())
    kept = asyncio.ensure_future(budget.turn())
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.wait_for(kept, 5)
    assert budget.waiting == 0


def test_the_cap_refuses_past_its_limit_and_frees_slots() -> None:
    cap = StreamCap(2, "this instance")
    assert cap.take() is None
    assert cap.take() is None
    refusal = cap.take()
    assert refusal is not None
    assert "already serves 2 WatchAllocation streams" in refusal and "--max-watch-streams" in refusal
    cap.give_back()
    assert cap.take() is None
    assert cap.open == 2


async def test_the_feed_builds_once_per_change_for_every_watcher() -> None:
    changes = ChangeSignal()
    builds = 0

    def build() -> bytes:
        nonlocal builds
        builds += 1
        return f"state {changes.version}".encode()

    feed = AllocationFeed(changes, build)
    followers = [feed.subscribe() for _ in range(100)]
    assert builds == 1
    assert all(latest is followers[0] for latest in followers)
    for _ in range(50):
        changes.notify()
    latest = followers[0]

    while latest.seq < 2:
        await asyncio.wait_for(latest.newer(latest.seq), 5)
    assert latest.value == b"state 50"
    assert builds == 2, "50 changes, coalesced into one message for all 100"
    for _ in followers:
        feed.unsubscribe()
    assert feed.watchers == 0
    changes.notify()
    await asyncio.sleep(0.1)
    assert builds == 2, "nobody watches: nothing is built"


async def test_the_feed_publishes_only_messages_that_differ() -> None:
    changes = ChangeSignal()
    feed = AllocationFeed(changes, lambda: b"always the same")
    latest = feed.subscribe()
    changes.notify()
    await asyncio.sleep(0.1)
    assert latest.seq == 1
    feed.unsubscribe()
