"""Throughput and latency of one rlservice instance against a bare gRPC + Redis baseline.

Both run on the same redis-server, one after the other, each in its own process:
- bare: a grpc.aio server on uvloop whose one unary method runs one EVALSHA of a trivial script;
- rlservice: one instance with a configuration that never runs out of capacity, driven with
  Acquire + Release pairs.
The load comes from separate client processes (grpc.aio on uvloop), a fixed number of calls at a
fixed concurrency, bounded in time; then again with one call at a time for unloaded latency.

    python bench/service_bench.py [--calls 20000] [--concurrency 48] [--clients 1] [--metrics]
    python bench/service_bench.py --scaling 1,2,3   # 1, 2 and 3 instances against one Redis

Redis runs scripts on one thread and every instance shares it, so Redis CPU per RPC sets the ceiling
of a whole deployment: both modes print it. A second instance whose model has rolling windows (under
its own key prefix, so each instance is alone) is measured in the same rounds, and its Redis CPU per
RPC compared with the fixed-window one's. With --metrics a third instance, with Prometheus metrics
on, is measured the same way and compared with the first.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import grpc
import grpc.aio
import redis
import uvloop
import yaml
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from rllocal.processes import RedisServer, spawn_module, stop_process
from rlproto import ratelimit_pb2 as pb
from rlproto import ratelimit_pb2_grpc as pb_grpc
from rlservice.backend.ledger import ClosedLease
from rlservice.metrics import PrometheusMetrics
from rlservice.types import Outcome, Usage

HOST = "127.0.0.1"
BARE_METHOD = "/bench.Bare/Call"
TRIVIAL_SCRIPT = "return redis.call('INCR', KEYS[1])"
BENCH_CONFIG: dict[str, Any] = {
    "models": {"bench-model": {"tokens_per_minute": 10**12, "requests_per_minute": 10**10}},
    "job_types": {
        "small": {"estimated_tokens": 100, "ratio": {"initial": 0.5}},
        "large": {"estimated_tokens": 1000, "ratio": {"initial": 0.5}},
    },
    "lease_ttl_ms": 3_600_000,
}
TARGET_RATIO = 0.80
# Redis CPU per RPC of a rolling model against a fixed one, in the same run.
TARGET_ROLLING = 1.10
# Redis CPU per RPC at 32-48 calls in flight.
TARGET_REDIS_US = 30.0


# ----- the bare server ---------------------------------------------------------------------------


async def _serve_bare(redis_url: str, ready: Connection) -> None:
    redis = Redis.from_url(redis_url, socket_connect_timeout=2, health_check_interval=10)
    execute = cast(Callable[..., Awaitable[Any]], redis.execute_command)
    sha = (await execute("SCRIPT", "LOAD", TRIVIAL_SCRIPT)).decode()

    async def call(request: pb.AcquireRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.AcquireResponse:
        count = await execute("EVALSHA", sha, 1, "{bench}:bare", request.job_id)
        return pb.AcquireResponse(lease_id=f"bare/{count}", model_id="bare")

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(
        call,
        request_deserializer=pb.AcquireRequest.FromString,
        response_serializer=pb.AcquireResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Bare", {"Call": handler}),))
    port = server.add_insecure_port(f"{HOST}:0")
    await server.start()
    ready.send(port)
    await server.wait_for_termination()


def serve_bare(redis_url: str, ready: Connection) -> None:
    uvloop.run(_serve_bare(redis_url, ready))


# ----- the load ----------------------------------------------------------------------------------


@dataclass
class Samples:
    """Latencies in seconds per method, and the wall time of the run."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    cpu_seconds: float = 0.0


async def _drive(target: str, kind: str, calls: int, concurrency: int, max_seconds: float, tag: str) -> Samples:
    """`calls` RPCs: bare calls, or Acquire + Release pairs (calls / 2 of each)."""
    samples = Samples({"Call": []} if kind == "bare" else {"Acquire": [], "Release": []})
    units = calls if kind == "bare" else calls // 2
    clock = time.perf_counter
    async with grpc.aio.insecure_channel(target) as channel:
        bare = channel.unary_unary(
            BARE_METHOD,
            request_serializer=pb.AcquireRequest.SerializeToString,
            response_deserializer=pb.AcquireResponse.FromString,
        )
        stub: pb_grpc.RateLimiterAsyncStub = pb_grpc.RateLimiterStub(channel)
        await channel.channel_ready()
        next_unit = 0
        deadline = clock() + max_seconds

        async def one(n: int) -> None:
            job_id = f"{tag}-{n}"
            started = clock()
            if kind == "bare":
                await bare(pb.AcquireRequest(job_id=job_id), timeout=10)
                samples.latencies["Call"].append(clock() - started)
                return
            grant = await stub.Acquire(pb.AcquireRequest(job_id=job_id, job_type="small"), timeout=10)
            acquired = clock()
            usage = pb.Usage(request_count=1, input_tokens=40, output_tokens=30)
            await stub.Release(pb.ReleaseRequest(lease_id=grant.lease_id, outcome=pb.SUCCESS, actual=usage), timeout=10)
            samples.latencies["Acquire"].append(acquired - started)
            samples.latencies["Release"].append(clock() - acquired)

        async def worker() -> None:
            nonlocal next_unit
            while next_unit < units and clock() < deadline:
                next_unit += 1
                await one(next_unit)

        started, cpu = clock(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        samples.seconds, samples.cpu_seconds = clock() - started, time.process_time() - cpu
    return samples


def drive(args: tuple[str, str, int, int, float, str]) -> Samples:
    return uvloop.run(_drive(*args))


# ----- runs and report ---------------------------------------------------------------------------


@dataclass
class Row:
    target: str
    method: str
    concurrency: int
    calls: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.calls / self.seconds

    def latencies(self) -> list[str]:
        return [f"{self.p50_ms:.2f}", f"{self.p99_ms:.2f}"]


def run_load(
    target: str | list[str], kind: str, calls: int, concurrency: int, clients: int, max_seconds: float, tag: str
) -> tuple[dict[str, Row], float]:
    """Runs the load from `clients` processes at once (client i drives targets[i % len]): one row
    per method and one 'total', and the CPU time the clients spent."""
    ctx = mp.get_context("spawn")
    targets = [target] if isinstance(target, str) else target
    jobs = [
        (
            targets[i % len(targets)],
            kind,
            calls // clients,
            max(1, concurrency // clients),
            max_seconds,
            f"{tag}-{i}-{os.getpid()}",
        )
        for i in range(clients)
    ]
    with ctx.Pool(clients) as pool:
        results = pool.map(drive, jobs)
    seconds = max(r.seconds for r in results)
    rows = {}
    everything: list[float] = []
    target = ",".join(targets)
    for method in results[0].latencies:
        lat = sorted(x for r in results for x in r.latencies[method])
        everything += lat
        rows[method] = row(target, method, concurrency, lat, seconds)
    if len(rows) > 1:
        rows["total"] = row(target, "total", concurrency, sorted(everything), seconds)
    return rows, sum(r.cpu_seconds for r in results)


def row(target: str, method: str, concurrency: int, lat: list[float], seconds: float) -> Row:
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return Row(target, method, concurrency, len(lat), seconds, q[49] * 1000, q[98] * 1000)


def table(rows: list[Row]) -> str:
    headers = ["target", "method", "concurrency", "calls", "seconds", "RPC/s", "p50 ms", "p99 ms"]
    cells = [
        [r.target, r.method, str(r.concurrency), str(r.calls), f"{r.seconds:.2f}", f"{r.rps:,.0f}", *r.latencies()]
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(c) for c in cells)])


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=20_000, help="RPCs per loaded run (default 20000)")
    p.add_argument("--concurrency", type=int, default=48, help="concurrent calls in loaded runs (default 48)")
    p.add_argument("--clients", type=int, default=1, help="load-generating processes (default 1)")
    p.add_argument("--unloaded-calls", type=int, default=2_000, help="RPCs at concurrency 1 (default 2000)")
    p.add_argument("--warmup", type=int, default=1_000, help="RPCs before each measured run (default 1000)")
    p.add_argument("--max-seconds", type=float, default=120.0, help="time bound of each run (default 120)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each is shown (default 2)")
    p.add_argument(
        "--scaling",
        help="instead: instance counts to run against one Redis, e.g. 1,2,3 (one client process an instance)",
    )
    p.add_argument("--metrics", action="store_true", help="also measure an instance with --metrics-port")
    return p.parse_args()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Measured:
    loaded: dict[str, Row]
    unloaded: dict[str, Row]
    server_cpu_us: float
    redis_cpu_us: float
    client_cpu_us: float
    # RPCs per script call: how many operations a call carried on average.
    per_script: float

    @property
    def rps(self) -> float:
        return self.loaded["total" if "total" in self.loaded else "Call"].rps


def evalsha_calls(client: redis.Redis) -> int:
    """EVALSHA calls the Redis behind `client` has run so far."""
    stats = cast(dict[str, dict[str, int]], client.info("commandstats"))
    return stats.get("cmdstat_evalsha", {}).get("calls", 0)


def script_calls(redis_server: RedisServer) -> int:
    """EVALSHA calls Redis has run so far."""
    with redis.Redis.from_url(redis_server.url) as client:
        return evalsha_calls(client)


def measure(
    args: argparse.Namespace, kind: str, address: str, server_pid: int, redis_server: RedisServer, tag: str
) -> Measured:
    assert redis_server.proc is not None
    redis_pid = redis_server.proc.pid
    run_load(address, kind, args.warmup, min(args.concurrency, 16), 1, args.max_seconds, f"{tag}-warm")
    before = cpu_seconds(server_pid), cpu_seconds(redis_pid)
    scripts_before = script_calls(redis_server)
    loaded, client_cpu = run_load(
        address, kind, args.calls, args.concurrency, args.clients, args.max_seconds, f"{tag}-load"
    )
    scripts = script_calls(redis_server) - scripts_before
    after = cpu_seconds(server_pid), cpu_seconds(redis_pid)
    unloaded, _ = run_load(address, kind, args.unloaded_calls, 1, 1, args.max_seconds, f"{tag}-idle")
    calls = sum(r.calls for m, r in loaded.items() if m != "total")
    server, redis_cpu = ((a - b) / calls * 1e6 for a, b in zip(after, before, strict=True))
    return Measured(loaded, unloaded, server, redis_cpu, client_cpu / calls * 1e6, calls / max(scripts, 1))


def start_bare(redis_url: str) -> tuple[mp.process.BaseProcess, int]:
    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=serve_bare, args=(redis_url, send), daemon=True)
    proc.start()
    if not receive.poll(30):
        proc.kill()
        raise RuntimeError("the bare server did not start")
    return proc, int(receive.recv())


def start_service(
    redis_url: str, work: Path, extra: tuple[str, ...] = (), n: int = 0, window: str = "fixed"
) -> tuple[subprocess.Popen[str], int]:
    config = work / f"bench-{window}.yaml"
    models = {name: {**model, "window": window} for name, model in BENCH_CONFIG["models"].items()}
    config.write_text(yaml.safe_dump({**BENCH_CONFIG, "models": models}))
    args = ["--port", "0", "--config", str(config), "--redis-url", redis_url, *extra]
    log = work / f"rlservice-{n}-{window}-{len(extra)}.log"
    return spawn_module("rlservice", args, log, 30, env={"RL_LOG_LEVEL": "WARNING"})


def metric_calls_us(pairs: int = 100_000) -> float:
    """CPU time of what the servicer and the ledger record per RPC with metrics on, measured in
    process: steadier than the end-to-end comparison on a shared machine."""
    metrics = PrometheusMetrics(CollectorRegistry())
    closed = ClosedLease(
        "bench/1", "bench", "bench-model", "small", "job", 1, 1, 100, 1, 0, Outcome.SUCCESS, True, False, 30, 0, 0,
        0, Usage(1, 40, 30, 0),
    )  # fmt: skip
    started = time.process_time()
    for _ in range(pairs):
        metrics.acquired("bench-model", "small", 0)
        metrics.redis_call("acquire", 0.0004)
        metrics.released(closed)
        metrics.redis_call("release", 0.0004)
    return (time.process_time() - started) / (2 * pairs) * 1e6


def report_metrics(args: argparse.Namespace, service: list[Measured], metered: list[Measured]) -> None:
    best_off = max(service, key=lambda m: m.rps)
    best_on = max(metered, key=lambda m: m.rps)
    rows: list[Row] = []
    for r in [*best_on.loaded.values(), *best_on.unloaded.values()]:
        r.target, r.method = "+metrics", "Acquire+Release" if r.method == "total" else r.method
        rows.append(r)
    print("\nThe same load on an instance with --metrics-port (measured in the same rounds)")
    print(table(rows))
    print(f"  server CPU per RPC: {best_off.server_cpu_us:.0f} µs without metrics, {best_on.server_cpu_us:.0f} µs with")
    rounds = ", ".join(f"{on.rps / off.rps:.1%}" for off, on in zip(service, metered, strict=True))
    print(f"metrics on / off RPC/s: {best_on.rps / best_off.rps:.1%} (best rounds); per round: {rounds}")
    calls = metric_calls_us()
    share = calls / best_off.server_cpu_us
    print(f"metric calls per RPC, in process: {calls:.1f} µs CPU = {share:.1%} of the server's CPU per RPC")


def report_rolling(service: list[Measured], rolling: list[Measured]) -> None:
    print("\nRedis CPU per RPC (µs), fixed and rolling windows, measured in the same rounds")
    for n, (fixed, roll) in enumerate(zip(service, rolling, strict=True)):
        print(f"  round {n + 1}: fixed {fixed.redis_cpu_us:.1f}, rolling {roll.redis_cpu_us:.1f}")
    fixed_us = statistics.median(m.redis_cpu_us for m in service)
    rolling_us = statistics.median(m.redis_cpu_us for m in rolling)
    ratio = rolling_us / fixed_us
    verdict = "meets" if ratio <= TARGET_ROLLING else "is above"
    print(
        f"rolling / fixed, medians: {rolling_us:.1f} / {fixed_us:.1f} µs = {ratio:.1%} "
        f"({verdict} the {TARGET_ROLLING:.0%} bound)"
    )


def report(args: argparse.Namespace, bare: list[Measured], service: list[Measured]) -> None:
    best_bare = max(bare, key=lambda m: m.rps)
    best_service = max(service, key=lambda m: m.rps)
    rename = {"Call": "EVALSHA call", "total": "Acquire+Release"}
    rows: list[Row] = []
    for m, target in ((best_bare, "bare"), (best_service, "rlservice")):
        for r in [*m.loaded.values(), *m.unloaded.values()]:
            r.target, r.method = target, rename.get(r.method, r.method)
            rows.append(r)
    print(
        f"{args.calls} RPCs per loaded run at concurrency {args.concurrency} from {args.clients} client "
        f"process(es); {args.unloaded_calls} RPCs unloaded; best of {args.rounds} round(s)"
    )
    print(table(rows))
    print("\nCPU time per RPC in the loaded run (µs)")
    print(f"  {'':<10} {'server':>7} {'redis':>7} {'client':>7}  RPCs per script call")
    for m, target in ((best_bare, "bare"), (best_service, "rlservice")):
        print(f"  {target:<10} {m.server_cpu_us:7.0f} {m.redis_cpu_us:7.1f} {m.client_cpu_us:7.0f}  {m.per_script:.1f}")
    redis_us = best_service.redis_cpu_us
    verdict = "meets" if redis_us <= TARGET_REDIS_US else "is above"
    print(
        f"\nRedis CPU per RPC: {redis_us:.1f} µs ({verdict} the {TARGET_REDIS_US:.0f} µs target; "
        f"{2 * redis_us:.1f} µs per job, Acquire + Release): one Redis caps a deployment near "
        f"{1e6 / redis_us:,.0f} RPC/s ({1e6 / redis_us / 2:,.0f} jobs/s)"
    )
    rounds = ", ".join(f"{s.rps / b.rps:.1%}" for b, s in zip(bare, service, strict=True))
    ratio = best_service.rps / best_bare.rps
    verdict = "meets" if ratio >= TARGET_RATIO else "is below"
    print(f"\nrlservice / bare RPC/s: {ratio:.1%} ({verdict} the {TARGET_RATIO:.0%} target); per round: {rounds}")


def scaling(args: argparse.Namespace, counts: list[int]) -> None:
    """Total RPC/s and Redis CPU per RPC with 1, 2, 3 … instance processes against one Redis."""
    print(
        f"{args.calls} RPCs per run at concurrency {args.concurrency} in total, one client process per instance; "
        "CPU per RPC in µs"
    )
    print(f"{'instances':>9} {'RPC/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'redis':>7} {'servers':>8} {'clients':>8}")
    for count in counts:
        with tempfile.TemporaryDirectory(prefix="rl-bench-") as tmp:
            redis_server = RedisServer(Path(tmp))
            redis_server.start()
            assert redis_server.proc is not None
            services: list[subprocess.Popen[str]] = []
            try:
                ports = []
                for n in range(count):
                    service, port = start_service(redis_server.url, Path(tmp), n=n)
                    services.append(service)
                    ports.append(port)
                targets = [f"{HOST}:{p}" for p in ports]
                run_load(targets, "service", args.warmup * count, 16 * count, count, args.max_seconds, "warm")
                pids = [s.pid for s in services]
                before = [cpu_seconds(p) for p in pids], cpu_seconds(redis_server.proc.pid)
                rows, client_cpu = run_load(
                    targets, "service", args.calls, args.concurrency, count, args.max_seconds, "load"
                )
                after = [cpu_seconds(p) for p in pids], cpu_seconds(redis_server.proc.pid)
            finally:
                for service in services:
                    stop_process(service)
                redis_server.stop()
        calls = sum(r.calls for m, r in rows.items() if m != "total")
        servers_us = (sum(after[0]) - sum(before[0])) / calls * 1e6
        redis_us = (after[1] - before[1]) / calls * 1e6
        total = rows["total"]
        print(
            f"{count:>9} {total.rps:>8,.0f} {total.p50_ms:>7.2f} {total.p99_ms:>7.2f} {redis_us:>7.1f} "
            f"{servers_us:>8.0f} {client_cpu / calls * 1e6:>8.0f}"
        )


def main() -> int:
    args = parse_args()
    if args.scaling:
        scaling(args, [int(n) for n in args.scaling.split(",")])
        return 0
    bare_runs: list[Measured] = []
    service_runs: list[Measured] = []
    rolling_runs: list[Measured] = []
    metered_runs: list[Measured] = []
    with tempfile.TemporaryDirectory(prefix="rl-bench-") as tmp:
        redis_server = RedisServer(Path(tmp))
        redis_server.start()
        assert redis_server.proc is not None
        bare: mp.process.BaseProcess | None = None
        service: subprocess.Popen[str] | None = None
        rolling: subprocess.Popen[str] | None = None
        metered: subprocess.Popen[str] | None = None
        try:
            bare, bare_port = start_bare(redis_server.url)
            service, service_port = start_service(redis_server.url, Path(tmp))
            rolling, rolling_port = start_service(
                redis_server.url, Path(tmp), ("--key-prefix", "rolling"), window="rolling"
            )
            if args.metrics:
                metered, metered_port = start_service(
                    redis_server.url, Path(tmp), ("--metrics-port", "0", "--key-prefix", "metered")
                )
            assert bare.pid is not None
            for n in range(args.rounds):
                bare_runs.append(measure(args, "bare", f"{HOST}:{bare_port}", bare.pid, redis_server, f"b{n}"))
                service_runs.append(
                    measure(args, "service", f"{HOST}:{service_port}", service.pid, redis_server, f"s{n}")
                )
                rolling_runs.append(
                    measure(args, "service", f"{HOST}:{rolling_port}", rolling.pid, redis_server, f"r{n}")
                )
                if metered is not None:
                    metered_runs.append(
                        measure(args, "service", f"{HOST}:{metered_port}", metered.pid, redis_server, f"m{n}")
                    )
        finally:
            for extra in (metered, rolling):
                if extra is not None:
                    stop_process(extra)
            if bare is not None:
                bare.kill()
                bare.join()
            if service is not None:
                stop_process(service)
            redis_server.stop()
    report(args, bare_runs, service_runs)
    report_rolling(service_runs, rolling_runs)
    if metered_runs:
        report_metrics(args, service_runs, metered_runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
