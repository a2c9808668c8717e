"""What WatchAllocation streams cost admission: Acquire + Release pairs on one instance with 0, 100,
1 000 and --max-watch-streams streams open, all in one run.

One redis-server and one instance whose model never runs out of capacity. A separate process holds
the streams, spread over --channels channels, each asking for min_interval_ms 50 and reading every
message. The load runs pairs at --concurrency against the instance; each pair changes the
allocation twice, so every stream has a new message due each 50 ms. Levels are measured in
alternating order over --rounds rounds (up, down, up...), so that drift in the machine's load hits
them all alike. Prints p50/p99 per pair and per call at each level, their ratio to no streams, the
messages the streams received per second and the instance's CPU. Exits 1 when a pair failed or a
stream ended with an error (each such end is listed with its status).

    python bench/watch_bench.py [--pairs 1500] [--concurrency 4] [--rounds 3] [--channels 10] [--cap N]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import uvloop
import yaml
from pairs import JOB_TYPE, MODEL, Samples, drive, percentile_ms
from service_bench import cpu_seconds

from rlcommon.watch_cap import DEFAULT_MAX_WATCH_STREAMS
from rllocal.processes import RedisServer, spawn_module, stop_process, wait_serving
from rlproto import ratelimit_pb2 as pb
from rlproto import ratelimit_pb2_grpc as pb_grpc

HOST = "127.0.0.1"
CONFIG: dict[str, Any] = {
    "models": {MODEL: {"tokens_per_minute": 10**12, "requests_per_minute": 10**10}},
    "job_types": {JOB_TYPE: {"estimated_tokens": 500}},
    "lease_ttl_ms": 3_600_000,
}
INTERVAL_MS = 50
BOOT_TIMEOUT_S = 30.0
# Opening a level's streams (each until its first message) must not take longer than this.
OPEN_TIMEOUT_S = 120.0
TARGET_P50 = 1.5
TARGET_P99 = 2.0


# ----- the streams, in a process of their own -----------------------------------------------------


@dataclass
class Report:
    """What the watching process saw so far."""

    open: int = 0
    messages: int = 0
    # "CODE: details" of every stream that ended without being cancelled by this process.
    ended: collections.Counter[str] = field(default_factory=collections.Counter)


class _Stream:
    def __init__(self, call: grpc.aio.UnaryStreamCall[pb.WatchAllocationRequest, pb.GetAllocationResponse]) -> None:
        self.call = call
        self.first = asyncio.Event()
        self.leaving = False
        self.task: asyncio.Task[None] | None = None


async def _watch(address: str, channels: int, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    chans = [grpc.aio.insecure_channel(address) for _ in range(channels)]
    stubs = [pb_grpc.RateLimiterStub(c) for c in chans]
    streams: list[_Stream] = []
    report = Report()

    async def read(stream: _Stream) -> None:
        try:
            async for _ in stream.call:
                report.messages += 1
                stream.first.set()
            report.ended["OK: the server ended the stream"] += 1
        except grpc.aio.AioRpcError as e:
            if not stream.leaving:
                report.ended[f"{e.code().name}: {e.details()}"] += 1
        finally:
            stream.first.set()

    def open_one(n: int) -> _Stream:
        request = pb.WatchAllocationRequest(min_interval_ms=INTERVAL_MS)
        stream = _Stream(stubs[n % channels].WatchAllocation(request))
        stream.task = asyncio.create_task(read(stream))
        return stream

    async def close(gone: list[_Stream]) -> None:
        for stream in gone:
            stream.leaving = True
            stream.call.cancel()
        await asyncio.gather(*(s.task for s in gone if s.task is not None), return_exceptions=True)

    while True:
        command, arg = await loop.run_in_executor(None, conn.recv)
        if command == "streams":
            if arg < len(streams):
                gone, streams = streams[arg:], streams[:arg]
                await close(gone)
            new = [open_one(n) for n in range(len(streams), arg)]
            await asyncio.wait_for(asyncio.gather(*(s.first.wait() for s in new)), OPEN_TIMEOUT_S)
            streams += new
        elif command == "stop":
            await close(streams)
            streams = []
        report.open = sum(1 for s in streams if s.task is not None and not s.task.done())
        conn.send(report)
        if command == "stop":
            for c in chans:
                await c.close(None)
            return


def watch(address: str, channels: int, conn: Connection) -> None:
    uvloop.run(_watch(address, channels, conn))


# ----- the load -----------------------------------------------------------------------------------


async def _pairs(address: str, pairs: int, concurrency: int, tag: str) -> Samples:
    async with grpc.aio.insecure_channel(address) as channel:
        return await drive(pb_grpc.RateLimiterStub(channel), pairs, concurrency, math.inf, tag)


def pairs(address: str, count: int, concurrency: int, tag: str) -> Samples:
    return uvloop.run(_pairs(address, count, concurrency, tag))


# ----- runs and report ----------------------------------------------------------------------------


@dataclass
class Level:
    streams: int
    samples: Samples = field(default_factory=Samples)
    messages: int = 0
    cpu_seconds: float = 0.0


def ask(conn: Connection, command: str, arg: int = 0) -> Report:
    conn.send((command, arg))
    if not conn.poll(OPEN_TIMEOUT_S + 30):
        raise RuntimeError(f"the watching process did not answer {command} {arg}")
    report: Report = conn.recv()
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=1500, help="measured pairs per level and round (default 1500)")
    p.add_argument("--warmup", type=int, default=200, help="unmeasured pairs after each level's streams open")
    p.add_argument("--concurrency", type=int, default=4, help="pairs in flight (default 4)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds over the levels (default 3)")
    p.add_argument("--channels", type=int, default=10, help="channels the streams are spread over (default 10)")
    p.add_argument(
        "--cap",
        type=int,
        default=DEFAULT_MAX_WATCH_STREAMS,
        help=f"the instance's --max-watch-streams and the top level (default {DEFAULT_MAX_WATCH_STREAMS})",
    )
    return p.parse_args(argv)


def measure(args: argparse.Namespace, work: Path) -> tuple[dict[int, Level], Report]:
    levels = {n: Level(n) for n in sorted({0, 100, 1000, args.cap}) if n <= args.cap}
    redis = RedisServer(work)
    redis.start()
    config = work / "bench.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    service_args = ["--port", "0", "--config", str(config), "--redis-url", redis.url]
    service_args += ["--max-watch-streams", str(args.cap)]
    instance: subprocess.Popen[str] | None = None
    watcher: mp.process.BaseProcess | None = None
    try:
        instance, port = spawn_module("rlservice", service_args, work / "rlservice.log", BOOT_TIMEOUT_S)
        address = f"{HOST}:{port}"
        wait_serving(address, BOOT_TIMEOUT_S)
        ctx = mp.get_context("spawn")
        conn, child = ctx.Pipe()
        watcher = ctx.Process(target=watch, args=(address, args.channels, child), daemon=True)
        watcher.start()
        for n in range(args.rounds):
            order = list(levels.values()) if n % 2 == 0 else list(levels.values())[::-1]
            for level in order:
                ask(conn, "streams", level.streams)
                pairs(address, args.warmup, args.concurrency, f"w{n}-{level.streams}")
                before, cpu = ask(conn, "count").messages, cpu_seconds(instance.pid)
                level.samples.add(pairs(address, args.pairs, args.concurrency, f"r{n}-{level.streams}"))
                level.messages += ask(conn, "count").messages - before
                level.cpu_seconds += cpu_seconds(instance.pid) - cpu
        final = ask(conn, "stop")
    finally:
        if watcher is not None:
            watcher.join(30)
            if watcher.is_alive():
                watcher.kill()
        if instance is not None:
            stop_process(instance)
        redis.stop()
    return levels, final


def report(args: argparse.Namespace, levels: dict[int, Level], final: Report) -> None:
    print(
        f"Acquire + Release pairs at concurrency {args.concurrency}, {args.pairs} per level in each of {args.rounds} "
        f"rounds; streams at min_interval_ms {INTERVAL_MS} over {args.channels} channels of another process"
    )
    print(f"{os.cpu_count()} CPUs, {platform.platform()}, load average {os.getloadavg()[0]:.2f} at the end")
    header = ("streams", "pairs", "pair p50", "pair p99", "call p50", "call p99", "p50 x", "p99 x", "msgs/s", "cpu")
    print("{:>7} {:>6} {:>9} {:>9} {:>9} {:>9} {:>6} {:>6} {:>8} {:>5}".format(*header))
    base = levels[0].samples
    for level in levels.values():
        s = level.samples
        p50, p99 = percentile_ms(s.pairs, 0.5), percentile_ms(s.pairs, 0.99)
        print(
            f"{level.streams:>7} {len(s.pairs):>6} {p50:>7.2f}ms {p99:>7.2f}ms"
            f" {percentile_ms(s.calls, 0.5):>7.2f}ms {percentile_ms(s.calls, 0.99):>7.2f}ms"
            f" {p50 / percentile_ms(base.pairs, 0.5):>6.2f} {p99 / percentile_ms(base.pairs, 0.99):>6.2f}"
            f" {level.messages / s.seconds:>8.0f} {level.cpu_seconds / s.seconds:>5.0%}"
        )
    top = levels[max(levels)].samples
    p50x = percentile_ms(top.pairs, 0.5) / percentile_ms(base.pairs, 0.5)
    p99x = percentile_ms(top.pairs, 0.99) / percentile_ms(base.pairs, 0.99)
    verdict = "meets" if p50x <= TARGET_P50 and p99x <= TARGET_P99 else "misses"
    print(
        f"at the cap ({max(levels)} streams): p50 {p50x:.2f}x, p99 {p99x:.2f}x of no streams ({verdict} the "
        f"{TARGET_P50}x / {TARGET_P99}x target)"
    )
    failed = sum(level.samples.errors for level in levels.values())
    print(f"pairs failed: {failed}")
    if final.ended:
        print("streams that ended with an error:")
        for status, count in final.ended.most_common():
            print(f"  {count} x {status}")
    else:
        print("streams that ended with an error: none")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="watch-bench-") as tmp:
        levels, final = measure(args, Path(tmp))
    report(args, levels, final)
    failed = sum(level.samples.errors for level in levels.values())
    return 1 if failed or final.ended else 0


if __name__ == "__main__":
    sys.exit(main())
