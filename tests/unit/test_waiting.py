"""FIFO wait queues: reservations are handed out in arrival order, never around a waiter."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from rlservice.capacity.waiting import WaitPlaces, WaitQueue


def supply(*items: int | None) -> tuple[Callable[[], int | None], list[int | None]]:
    """A reserve() handing out items in order, recording what it handed out."""
    given: list[int | None] = []
    source: Iterator[int | None] = iter(items)

    def reserve() -> int | None:
        item = next(source, None)
        given.append(item)
        return item

    return reserve, given


async def test_waiters_are_served_in_arrival_order() -> None:
    queue: WaitQueue[int] = WaitQueue(WaitPlaces(100))
    waiters = [queue.join() for _ in range(3)]
    assert len(queue) == 3
    reserve, _ = supply(10, 20, 30)
    queue.wake_in_order(reserve)
    assert [await w.future for w in waiters] == [10, 20, 30]


async def test_stops_at_the_first_waiter_that_does_not_fit() -> None:
    queue: WaitQueue[int] = WaitQueue(WaitPlaces(100))
    first, second, third = queue.join(), queue.join(), queue.join()
    reserve, given = supply(1, None, 3)
    queue.wake_in_order(reserve)
    assert first.woken and first.future.result() == 1
    assert not second.woken
    assert not third.woken
    assert given == [1, None]


async def test_woken_waiters_are_not_served_twice() -> None:
    queue: WaitQueue[int] = WaitQueue(WaitPlaces(100))
    first, second = queue.join(), queue.join()
    queue.wake_in_order(supply(1, None)[0])
    reserve, given = supply(2)
    queue.wake_in_order(reserve)
    assert first.future.result() == 1
    assert second.future.result() == 2
    assert given == [2]


async def test_a_cancelled_waiter_takes_nothing() -> None:
    queue: WaitQueue[int] = WaitQueue(WaitPlaces(100))
    gone, staying = queue.join(), queue.join()
    gone.future.cancel()
    reserve, given = supply(5)
    queue.wake_in_order(reserve)
    assert staying.future.result() == 5
    assert given == [5]


async def test_leaving_removes_the_waiter_once() -> None:
    queue: WaitQueue[int] = WaitQueue(WaitPlaces(100))
    first, second = queue.join(), queue.join()
    queue.leave(first)
    queue.leave(first)
    assert len(queue) == 1
    queue.wake_in_order(supply(7)[0])
    assert second.future.result() == 7
    assert not first.woken


async def test_leaving_a_stranger_is_harmless() -> None:
    queue: WaitQueue[int] = WaitQueue(WaitPlaces(100))
    other: WaitQueue[int] = WaitQueue(WaitPlaces(100))
    stranger = other.join()
    queue.join()
    queue.leave(stranger)
    assert (len(queue), len(other)) == (1, 1)


async def test_a_rearmed_waiter_keeps_its_place() -> None:
    queue: WaitQueue[int] = WaitQueue(WaitPlaces(100))
    first, second = queue.join(), queue.join()
    queue.wake_in_order(supply(1, None)[0])
    first.rearm()
    assert not first.woken
    queue.wake_in_order(supply(2, 3)[0])
    assert first.future.result() == 2
    assert second.future.result() == 3


async def test_an_empty_queue_reserves_nothing() -> None:
    queue: WaitQueue[int] = WaitQueue(WaitPlaces(100))
    reserve, given = supply(1)
    queue.wake_in_order(reserve)
    assert given == []


async def test_a_waiting_task_resumes_with_its_reservation() -> None:
    queue: WaitQueue[str] = WaitQueue(WaitPlaces(100))
    waiter = queue.join()
    task = asyncio.ensure_future(waiter.future)
    queue.wake_in_order(lambda: "slot")
    assert await task == "slot"
