"""Acquire + Release pairs against several set-ups of the service in one run: the same load on each,
in alternating rounds so that drift in the machine's load hits all alike, then p50/p99 per call and
per pair, pairs per second, and what each set-up adds to the first. bench/proxy_bench.py and
bench/security_bench.py compare their set-ups with it; bench/cluster_bench.py drives its models
with `drive`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field

import grpc
import grpc.aio
import uvloop

from rlproto import ratelimit_pb2 as pb
from rlproto import ratelimit_pb2_grpc as pb_grpc

MODEL = "deepinfra/gpt-oss-20b"
JOB_TYPE = "summary"
USAGE = pb.Usage(request_count=1, input_tokens=400, output_tokens=100)
Metadata = tuple[tuple[str, str], ...] | None


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
    model: str = MODEL,
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
                    pb.AcquireRequest(job_id=job_id, job_type=JOB_TYPE, models=[model]), timeout=10, metadata=metadata
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


@dataclass(frozen=True)
class SetUp:
    """One way of reaching the service: a name, its address, the channel's credentials (None:
    plaintext) and the metadata each call carries."""

    name: str
    address: str
    credentials: grpc.ChannelCredentials | None = None
    metadata: Metadata = None

    def channel(self) -> grpc.aio.Channel:
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.address)
        return grpc.aio.secure_channel(self.address, self.credentials)


Results = dict[int, dict[str, Samples]]


def add_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--pairs", type=int, default=3000, help=f"pairs per {what} at --concurrency")
    parser.add_argument("--sequential-pairs", type=int, default=600, help=f"pairs per {what} one at a time")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds the pairs are split into")
    parser.add_argument("--warmup", type=int, default=300, help=f"unmeasured pairs per {what} first")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop issuing pairs after this")


async def _measure(setups: list[SetUp], args: argparse.Namespace) -> Results:
    until = time.perf_counter() + args.max_seconds
    channels = [s.channel() for s in setups]
    stubs = {s.name: (pb_grpc.RateLimiterStub(c), s.metadata) for s, c in zip(setups, channels, strict=True)}
    names = [s.name for s in setups]
    results: Results = {}
    try:
        for name, (stub, metadata) in stubs.items():
            await drive(stub, args.warmup, args.concurrency, until, f"warmup-{name}", metadata)
        for level in sorted({1, args.concurrency}):
            results[level] = {name: Samples() for name in names}
            pairs = (args.pairs if level == args.concurrency else args.sequential_pairs) // args.rounds
            for n in range(args.rounds):
                for name in names if n % 2 == 0 else names[::-1]:
                    stub, metadata = stubs[name]
                    results[level][name].add(await drive(stub, pairs, level, until, f"c{level}-r{n}-{name}", metadata))
    finally:
        for c in channels:
            await c.close(None)
    return results


def measure(setups: list[SetUp], args: argparse.Namespace) -> Results:
    """Samples by concurrency (1 and --concurrency) and set-up, on a loop of its own (uvloop)."""
    return uvloop.run(_measure(setups, args))


def report(results: Results, title: str, column: str) -> int:
    """Prints the table and, per concurrency, what each set-up adds per call to the first; 1 when a
    pair failed."""
    print(title)
    header = ("concurrency", column, "pairs", "pairs/s", "call p50", "call p99", "pair p50", "pair p99", "errors")
    print("{:>11} {:>10} {:>6} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6}".format(*header))
    errors = 0
    for level, by_name in results.items():
        for name, s in by_name.items():
            rate = len(s.pairs) / s.seconds if s.seconds else 0.0
            print(
                f"{level:>11} {name:>10} {len(s.pairs):>6} {rate:>8.0f}"
                f" {percentile_ms(s.calls, 0.5):>7.3f}ms {percentile_ms(s.calls, 0.99):>7.3f}ms"
                f" {percentile_ms(s.pairs, 0.5):>7.3f}ms {percentile_ms(s.pairs, 0.99):>7.3f}ms {s.errors:>6}"
            )
            errors += s.errors
    for level, by_name in results.items():
        first, *others = by_name
        base = by_name[first].calls
        for name in others:
            calls = by_name[name].calls
            p50 = percentile_ms(calls, 0.5) - percentile_ms(base, 0.5)
            p99 = percentile_ms(calls, 0.99) - percentile_ms(base, 0.99)
            print(f"{name} adds per call to {first} at concurrency {level}: p50 {p50:+.3f} ms, p99 {p99:+.3f} ms")
    return 1 if errors else 0
