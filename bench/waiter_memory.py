"""What one queued Acquire costs an instance in memory (RSS), to size max_waiters.

Runs a redis-server and one instance whose only model admits one call at a time; one call holds it,
then --waiters Acquires queue behind it, opened in steps of --step over --channels channels (the
instance's GetAllocation counts them waiting before the next step). Reads the instance's VmRSS
from /proc with none waiting and at each step.

    python bench/waiter_memory.py [--waiters 8000] [--step 1000] [--channels 4]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import grpc.aio

from rllocal.processes import RedisServer, spawn_module
from rlproto import ratelimit_pb2 as pb
from rlproto import ratelimit_pb2_grpc as pb_grpc

CONFIG = """\
models:
  m: {max_concurrent_requests: 1}
job_types:
  w: {estimated_tokens: 10, max_wait_ms: {m: 600000}}
max_waiters: 10000
"""
SETTLE_S = 1.0


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


async def waiting(stub: pb_grpc.RateLimiterAsyncStub) -> int:
    reply = await stub.GetAllocation(pb.GetAllocationRequest(), timeout=30)
    return reply.job_types["w"].waiting


async def settle(stub: pb_grpc.RateLimiterAsyncStub, want: int) -> None:
    deadline = time.monotonic() + 120
    while await waiting(stub) < want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {want} Acquires waiting after 120 s")
        await asyncio.sleep(0.2)
    # Let the allocator return what the burst of arrivals used for a moment.
    await asyncio.sleep(SETTLE_S)


async def measure(url: str, work: Path, total: int, step: int, channels: int) -> list[tuple[int, int]]:
    config = work / "waiters.yaml"
    config.write_text(CONFIG)
    argv = ["--port", "0", "--config", str(config), "--redis-url", url]
    proc, port = spawn_module("rlservice", argv, work / "instance.log", 30)
    # A subchannel pool of its own per channel: otherwise they would share one connection.
    own_connection = [("grpc.use_local_subchannel_pool", 1)]
    opened = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=own_connection) for _ in range(channels)]
    stubs = [pb_grpc.RateLimiterStub(c) for c in opened]
    calls: list[asyncio.Task[pb.AcquireResponse]] = []
    try:
        while True:
            try:
                await stubs[0].Acquire(pb.AcquireRequest(job_id="holder", job_type="w"), timeout=5)
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.2)
        await settle(stubs[0], 0)
        points = [(0, rss_kb(proc.pid))]
        while len(calls) < total:
            for _ in range(step):
                n = len(calls)
                request = pb.AcquireRequest(job_id=f"w{n}", job_type="w")
                calls.append(asyncio.ensure_future(stubs[n % channels].Acquire(request, timeout=600)))
            await settle(stubs[0], len(calls))
            points.append((len(calls), rss_kb(proc.pid)))
        return points
    finally:
        for call in calls:
            call.cancel()
        for channel in opened:
            await channel.close(None)
        proc.terminate()
        proc.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--waiters", type=int, default=8000)
    p.add_argument("--step", type=int, default=1000)
    p.add_argument("--channels", type=int, default=4)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="rl-waiter-memory-") as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            points = asyncio.run(measure(server.url, Path(tmp), args.waiters, args.step, args.channels))
        finally:
            server.stop()
    base = points[0][1]
    print("waiters  rss_kb  kb_per_waiter")
    for n, kb in points:
        print(f"{n:7d} {kb:7d} {'' if n == 0 else f'{(kb - base) / n:.2f}'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
