"""What rlproxy adds: Acquire + Release pairs straight to one rlservice instance and through a proxy.

Starts a redis-server, one instance (`--preset default`) and a proxy in front of it, all on
loopback, then drives both paths in one run with the same load: a fixed number of pairs at a fixed
concurrency, bounded in time, in alternating rounds so that drift in the machine's load hits both
alike. Acquires name the concurrency-only model so that no rate window runs out mid-run. Prints
p50/p99 per call and per pair, pairs per second, and the proxy's added p50/p99 per call.

    python bench/proxy_bench.py [--pairs 3000] [--concurrency 32] [--rounds 3] [--max-seconds 120]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import grpc.aio
import uvloop

from rllocal.processes import RedisServer, running
from rlproto import ratelimit_pb2 as pb
from rlproto import ratelimit_pb2_grpc as pb_grpc

HOST = "127.0.0.1"
BOOT_TIMEOUT_S = 30.0
MODEL = "deepinfra/gpt-oss-20b"
JOB_TYPE = "summary"
USAGE = pb.Usage(request_count=1, input_tokens=400, output_tokens=100)
PATHS = ("direct", "proxy")


@dataclass
class Samples:
    """Seconds per call and per pair, wall time, and failed pairs."""

    calls: list[float] = field(default_factory=list)
    pairs: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: int = 0

    def add(self, other: Samples) -> None:
        self.calls += other.calls
        self.pairs += other.pairs
        self.seconds += other.seconds
        self.errors += other.errors


def percentile_ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def drive(
    stub: pb_grpc.RateLimiterAsyncStub,
    pairs: int,
    concurrency: int,
    until: float,
    tag: str,
    metadata: tuple[tuple[str, str], ...] | None = None,
) -> Samples:
    samples = Samples()
    clock = time.perf_counter
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while issued < pairs and clock() < until:
            issued += 1
            job_id = f"{tag}-{issued}"
            started = clock()
            try:
                grant = await stub.Acquire(
                    pb.AcquireRequest(job_id=job_id, job_type=JOB_TYPE, models=[MODEL]), timeout=10, metadata=metadata
                )
                acquired = clock()
                await stub.Release(
                    pb.ReleaseRequest(lease_id=grant.lease_id, outcome=pb.SUCCESS, actual=USAGE),
                    timeout=10,
                    metadata=metadata,
                )
            except grpc.aio.AioRpcError:
                samples.errors += 1
                continue
            done = clock()
            samples.calls += (acquired - started, done - acquired)
            samples.pairs.append(done - started)

    started = clock()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    samples.seconds = clock() - started
    return samples


async def measure(ports: dict[str, int], args: argparse.Namespace) -> dict[int, dict[str, Samples]]:
    until = time.perf_counter() + args.max_seconds
    channels = {path: grpc.aio.insecure_channel(f"{HOST}:{port}") for path, port in ports.items()}
    stubs = {path: pb_grpc.RateLimiterStub(channel) for path, channel in channels.items()}
    results: dict[int, dict[str, Samples]] = {}
    try:
        for path, stub in stubs.items():
            await drive(stub, args.warmup, args.concurrency, until, f"warmup-{path}")
        levels = sorted({1, args.concurrency})
        for level in levels:
            results[level] = {path: Samples() for path in PATHS}
            pairs = (args.pairs if level == args.concurrency else args.sequential_pairs) // args.rounds
            for n in range(args.rounds):
                order = PATHS if n % 2 == 0 else PATHS[::-1]
                for path in order:
                    tag = f"c{level}-r{n}-{path}"
                    results[level][path].add(await drive(stubs[path], pairs, level, until, tag))
    finally:
        for channel in channels.values():
            await channel.close(None)
    return results


def report(results: dict[int, dict[str, Samples]]) -> int:
    print(f"Acquire + Release pairs on loopback, one rlservice instance (preset default, model {MODEL})")
    header = ("concurrency", "path", "pairs", "pairs/s", "call p50", "call p99", "pair p50", "pair p99", "errors")
    print("{:>11} {:>7} {:>6} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6}".format(*header))
    errors = 0
    for level, by_path in results.items():
        for path, s in by_path.items():
            rate = len(s.pairs) / s.seconds if s.seconds else 0.0
            print(
                f"{level:>11} {path:>7} {len(s.pairs):>6} {rate:>8.0f}"
                f" {percentile_ms(s.calls, 0.5):>7.3f}ms {percentile_ms(s.calls, 0.99):>7.3f}ms"
                f" {percentile_ms(s.pairs, 0.5):>7.3f}ms {percentile_ms(s.pairs, 0.99):>7.3f}ms {s.errors:>6}"
            )
            errors += s.errors
    for level, by_path in results.items():
        direct, proxied = by_path["direct"].calls, by_path["proxy"].calls
        p50 = percentile_ms(proxied, 0.5) - percentile_ms(direct, 0.5)
        p99 = percentile_ms(proxied, 0.99) - percentile_ms(direct, 0.99)
        print(f"added by the proxy per call at concurrency {level}: p50 {p50:+.3f} ms, p99 {p99:+.3f} ms")
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3000, help="pairs per path at --concurrency")
    parser.add_argument("--sequential-pairs", type=int, default=600, help="pairs per path one at a time")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds the pairs are split into")
    parser.add_argument("--warmup", type=int, default=300, help="unmeasured pairs per path first")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop issuing pairs after this")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="proxy-bench-") as tmp:
        work = Path(tmp)
        redis = RedisServer(work)
        redis.start()
        try:
            service_args = ["--port", "0", "--preset", "default", "--redis-url", redis.url]
            with running("rlservice", service_args, work / "rlservice.log", BOOT_TIMEOUT_S) as instance:
                proxy_args = ["--port", "0", "--targets", f"{HOST}:{instance}"]
                with running("rlproxy", proxy_args, work / "rlproxy.log", BOOT_TIMEOUT_S) as proxy:
                    results = uvloop.run(measure({"direct": instance, "proxy": proxy}, args))
        finally:
            redis.stop()
    return report(results)


if __name__ == "__main__":
    sys.exit(main())
