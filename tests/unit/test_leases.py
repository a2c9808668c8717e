"""The open leases of an instance, by lease id and by job id."""

from __future__ import annotations

import asyncio

from rlservice.capacity.leases import Lease, LeaseTable
from rlservice.types import Estimate


def lease(lease_id: str, job_id: str = "", model: str = "m") -> Lease:
    return Lease(
        lease_id=lease_id,
        job_id=job_id,
        job_type="summary",
        model=model,
        estimate=Estimate(10_000, 1),
        minute_window=1,
        day_window=0,
        expires_at_ms=300_000,
        models_tried=(model,),
        waited_ms=0,
    )


def test_found_by_id_and_by_job() -> None:
    table = LeaseTable()
    a = lease("inst/a", "job-1")
    table.add(a)
    assert len(table) == 1
    assert table.get("inst/a") is a
    assert table.for_job("job-1") is a
    assert table.get("inst/b") is None
    assert table.for_job("job-2") is None


def test_pop_forgets_both_ways() -> None:
    table = LeaseTable()
    table.add(lease("inst/a", "job-1"))
    popped = table.pop("inst/a")
    assert popped is not None and popped.lease_id == "inst/a"
    assert table.get("inst/a") is None
    assert table.for_job("job-1") is None
    assert len(table) == 0
    assert table.pop("inst/a") is None


def test_an_empty_job_id_is_not_indexed() -> None:
    table = LeaseTable()
    table.add(lease("inst/a"))
    assert table.for_job("") is None
    assert table.get("inst/a") is not None


def test_popping_an_older_lease_keeps_the_newer_one_of_the_same_job() -> None:
    table = LeaseTable()
    old, new = lease("inst/old", "job-1"), lease("inst/new", "job-1")
    table.add(old)
    table.add(new)
    table.pop("inst/old")
    assert table.for_job("job-1") is new
    assert len(table) == 1


async def test_pop_cancels_the_expiry_timer() -> None:
    loop = asyncio.get_running_loop()
    table = LeaseTable()
    a = lease("inst/a", "job-1")
    a.timer = loop.call_later(3_600, lambda: None)
    table.add(a)
    table.pop("inst/a")
    assert a.timer.cancelled()


async def test_drain_returns_everything_and_cancels_timers() -> None:
    loop = asyncio.get_running_loop()
    table = LeaseTable()
    leases = [lease(f"inst/{i}", f"job-{i}") for i in range(3)]
    for item in leases:
        item.timer = loop.call_later(3_600, lambda: None)
        table.add(item)
    drained = table.drain()
    assert {x.lease_id for x in drained} == {"inst/0", "inst/1", "inst/2"}
    assert len(table) == 0
    assert all(x.timer is not None and x.timer.cancelled() for x in leases)
    assert all(table.for_job(f"job-{i}") is None for i in range(3))
