"""First end-to-end checks: pools, a grant, a refund."""

from __future__ import annotations

from rlproto import ratelimit_pb2 as pb

from .harness import Harness


async def test_two_instances_split_the_pool(harness: Harness) -> None:
    a = harness.boot_instance(0, "slotCalculation")
    b = harness.boot_instance(0, "slotCalculation")
    alloc = await harness.allocation(a.port)
    assert alloc.allocation.instance_count == 2
    assert alloc.allocation.pools["model-alpha"].total_slots == 6
    assert alloc.allocation.pools["model-alpha"].tokens_per_minute == 50_000
    job = await harness.run_job(b.port, "jobTypeB", actual=pb.Usage(request_count=1, input_tokens=1000))
    assert job.release is not None and job.release.refunded_tokens == 4000
