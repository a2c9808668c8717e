"""How soon another instance applies a Release: the time from Release's reply on instance A to the
moment instance B's allocation shows the usage (SPEC §5: within 50 ms).

One redis-server, two instances with a configuration that never runs out of capacity. For each sample,
a job is acquired and released on A with 1 000 tokens of usage, which moves every pool by 500 tokens;
B's GetAllocation is then read back to back until its pool has moved. Meanwhile --load clients on
each instance run Acquire + Release pairs that report no usage (they move no pool). Heartbeats are
ten minutes apart, so what B shows comes from the published change, not from a heartbeat's re-read.
Exits 1 when a sample misses the target.

    python bench/propagation.py [--samples 500] [--load 8]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc.aio
import uvloop
import yaml

from rllocal.processes import RedisServer, running
from rlproto import ratelimit_pb2 as pb
from rlproto import ratelimit_pb2_grpc as pb_grpc

HOST = "127.0.0.1"
MODEL = "bench-model"
JOB = "small"
TARGET_MS = 50.0
# Bounds one sample: a change that never arrives is a miss, not a hang.
GIVE_UP_S = 5.0
CONFIG: dict[str, Any] = {
    "models": {MODEL: {"tokens_per_minute": 10**12}},
    "job_types": {JOB: {"estimated_tokens": 100}},
    "heartbeat_interval_ms": 600_000,
    "stale_after_ms": 1_800_000,
}
USED = pb.Usage(request_count=1, input_tokens=600, output_tokens=400)


async def pool_tokens(stub: pb_grpc.RateLimiterAsyncStub) -> int:
    reply = await stub.GetAllocation(pb.GetAllocationRequest(), timeout=5)
    return reply.allocation.pools[MODEL].tokens_per_minute


async def background(stub: pb_grpc.RateLimiterAsyncStub, name: str, stop: asyncio.Event) -> None:
    """Acquire + Release pairs with no usage until stopped."""
    for n in itertools.count():
        if stop.is_set():
            return
        lease = await stub.Acquire(pb.AcquireRequest(job_id=f"{name}-{n}", job_type=JOB), timeout=5)
        await stub.Release(pb.ReleaseRequest(lease_id=lease.lease_id, outcome=pb.SUCCESS, actual=pb.Usage()), timeout=5)


async def measure(a: int, b: int, samples: int, load: int) -> list[float]:
    """Seconds from each Release's reply on A until B's pool had moved (GIVE_UP_S for a miss)."""
    async with grpc.aio.insecure_channel(f"{HOST}:{a}") as ca, grpc.aio.insecure_channel(f"{HOST}:{b}") as cb:
        stub_a: pb_grpc.RateLimiterAsyncStub = pb_grpc.RateLimiterStub(ca)
        stub_b: pb_grpc.RateLimiterAsyncStub = pb_grpc.RateLimiterStub(cb)
        deadline = time.monotonic() + 30
        while (await stub_b.GetAllocation(pb.GetAllocationRequest(), timeout=5)).allocation.instance_count != 2:
            if time.monotonic() > deadline:
                raise RuntimeError("instance B never saw two instances")
        stop = asyncio.Event()
        workers = [
            asyncio.create_task(background(stub, f"{tag}{i}", stop))
            for i in range(load)
            for tag, stub in (("a", stub_a), ("b", stub_b))
        ]
        try:
            return await follow(stub_a, stub_b, samples)
        finally:
            stop.set()
            await asyncio.gather(*workers)


async def follow(
    stub_a: pb_grpc.RateLimiterAsyncStub, stub_b: pb_grpc.RateLimiterAsyncStub, samples: int
) -> list[float]:
    seen: list[float] = []
    for n in range(samples):
        before = await pool_tokens(stub_b)
        lease = await stub_a.Acquire(pb.AcquireRequest(job_id=f"p{n}", job_type=JOB), timeout=5)
        await stub_a.Release(pb.ReleaseRequest(lease_id=lease.lease_id, outcome=pb.SUCCESS, actual=USED), timeout=5)
        released = time.perf_counter()
        while await pool_tokens(stub_b) == before and time.perf_counter() - released < GIVE_UP_S:
            pass
        seen.append(time.perf_counter() - released)
    return seen


def report(seen: list[float], load: int) -> int:
    ms = sorted(s * 1000 for s in seen)
    late = sum(m > TARGET_MS for m in ms)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    print(
        f"{len(ms)} Releases on instance A, each read back on instance B until its pool moved;"
        f" {load} clients of background pairs on each instance"
    )
    print(f"ms from A's reply to B showing it: p50 {statistics.median(ms):.2f}, p99 {p99:.2f}, max {ms[-1]:.2f}")
    verdict = "met" if late == 0 else f"missed by {late} of {len(ms)}"
    print(f"target: every one within {TARGET_MS:.0f} ms: {verdict}")
    return 1 if late else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=500, help="Releases to follow (default 500)")
    parser.add_argument("--load", type=int, default=8, help="background clients per instance (default 8)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="propagation-bench-") as tmp:
        work = Path(tmp)
        config = work / "config.yaml"
        config.write_text(yaml.safe_dump(CONFIG))
        redis = RedisServer(work)
        redis.start()
        try:
            common = ["--port", "0", "--config", str(config), "--redis-url", redis.url]
            with (
                running("rlservice", common, work / "a.log", 30) as a,
                running("rlservice", common, work / "b.log", 30) as b,
            ):
                seen = uvloop.run(measure(a, b, args.samples, args.load))
        finally:
            redis.stop()
    return report(seen, args.load)


if __name__ == "__main__":
    sys.exit(main())
