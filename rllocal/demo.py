"""python -m rllocal.demo: a local redis-server, two rlservice instances and rlproxy, and a mixed load
of jobs driven through the proxy. Prints progress once a second and a summary at the end.

The instances run the `default` preset with short per-model waits added to every job type: the
preset alone waits for the next minute window before it escalates, which a short demo never sees.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import grpc.aio
import redis
import uvloop
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rllocal.processes import (
    first_line,
    free_port,
    listening_port,
    poll_until,
    redis_argv,
    redis_server_binary,
    stop_processes,
)
from rlproto import ratelimit_pb2 as pb
from rlproto import ratelimit_pb2_grpc as pb_grpc
from rlservice.config import preset_path

HOST = "127.0.0.1"
BOOT_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 6.0
ACQUIRE_DEADLINE_S = 2.5
RELEASE_DEADLINE_S = 5.0
# Jobs still running when the time is up get this long to finish and release.
DRAIN_S = ACQUIRE_DEADLINE_S + 5.0
SIGNAL_DRAIN_S = 0.5
# A grant is counted as waited when the service held it at least this long.
WAITED_MS = 10


@dataclass(frozen=True)
class Mix:
    """The load of one job type: concurrent workers, how long a job runs (s), and the service's
    max_wait_ms on each model of the escalation order."""

    workers: int
    run_s: tuple[float, float]
    max_wait_ms: tuple[int, int, int]


JOB_MIX = {
    "summary": Mix(40, (1.0, 4.0), (1000, 800, 1500)),
    "VacationPlanning": Mix(40, (0.5, 2.5), (500, 500, 1000)),
    "ImageCreation": Mix(50, (1.0, 3.0), (300, 300, 1000)),
    "BudgetCalculation": Mix(30, (0.3, 1.5), (200, 200, 600)),
    "WeatherForecast": Mix(30, (0.2, 0.8), (0, 0, 0)),
}
THINK_S = (0.0, 0.3)
EXHAUSTED_BACKOFF_S = (0.2, 0.6)


def short(model: str) -> str:
    return model.rsplit("/", 1)[-1]


# ----- processes ---------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[Any]
    port: int


@dataclass
class Cluster:
    """Every process the demo started; stop() ends them all, whatever state they are in."""

    workdir: Path
    children: list[Child] = field(default_factory=list)

    def _popen(self, argv: list[str], log: Path, stdout: int) -> subprocess.Popen[str]:
        with log.open("w") as err:
            # Their own session: a Ctrl-C at the terminal reaches only the demo, which stops them in order.
            return subprocess.Popen(argv, stdout=stdout, stderr=err, text=True, start_new_session=True)

    def start_redis(self) -> Child:
        port = free_port()
        argv = redis_argv(redis_server_binary(), port, self.workdir)
        proc = self._popen(argv, self.workdir / "redis.log", subprocess.DEVNULL)
        child = Child("redis-server", proc, port)
        self.children.append(child)
        client = redis.Redis(host=HOST, port=port, socket_timeout=2)

        def pings() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {proc.returncode}")
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            poll_until(pings, timeout=BOOT_TIMEOUT_S, what="redis-server to answer PING")
        finally:
            client.close()
        return child

    def start_module(self, module: str, args: list[str]) -> Child:
        log = self.workdir / f"{module}-{len(self.children)}.log"
        proc = self._popen([sys.executable, "-m", module, "--port", "0", *args], log, subprocess.PIPE)
        child = Child(module, proc, 0)
        self.children.append(child)
        child.port = listening_port(module, first_line(proc, BOOT_TIMEOUT_S), log)
        return child

    def stop(self) -> None:
        """SIGTERM to all (proxy and instances unregister), SIGKILL what is left, redis-server last."""
        servers = [c.proc for c in self.children if c.name != "redis-server"]
        stop_processes(servers, STOP_TIMEOUT_S)
        stop_processes([c.proc for c in self.children if c.name == "redis-server"], STOP_TIMEOUT_S)


def write_demo_config(path: Path) -> list[str]:
    """Writes the default preset with the demo's waits; returns the escalation order."""
    data = yaml.safe_load(preset_path("default").read_text())
    order = data["escalation_order"]
    for name, mix in JOB_MIX.items():
        data["job_types"][name]["max_wait_ms"] = dict(zip(order, mix.max_wait_ms, strict=True))
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return list(order)


async def wait_serving(port: int) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    async with grpc.aio.insecure_channel(f"{HOST}:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {port} not SERVING after {BOOT_TIMEOUT_S}s")
            await asyncio.sleep(0.05)


# ----- statistics --------------------------------------------------------------------------------


@dataclass
class Granted:
    """Granted jobs of one job type on one model."""

    count: int = 0
    waited: int = 0
    waited_ms: int = 0
    escalated: int = 0
    refunded_tokens: int = 0
    overage_tokens: int = 0
    unknown_usage: int = 0
    cost_usd: float = 0.0


@dataclass
class Outcomes:
    """Acquire results of one job type."""

    attempts: int = 0
    granted: int = 0
    exhausted: int = 0
    deadline: int = 0
    failed: int = 0


@dataclass
class Stats:
    cells: defaultdict[tuple[str, str], Granted] = field(default_factory=lambda: defaultdict(Granted))
    outcomes: defaultdict[str, Outcomes] = field(default_factory=lambda: defaultdict(Outcomes))
    acquiring: int = 0
    errors: list[str] = field(default_factory=list)

    def total(self, attr: str) -> int:
        return sum(int(getattr(o, attr)) for o in self.outcomes.values())

    @property
    def escalated(self) -> int:
        return sum(c.escalated for c in self.cells.values())


# ----- load --------------------------------------------------------------------------------------


def actual_usage(rng: random.Random, reserved: pb.Reservation) -> tuple[pb.Outcome.ValueType, pb.Usage]:
    """Mostly below the estimate (refunds), sometimes above (overages), sometimes unknown."""
    roll = rng.random()
    if roll < 0.08:
        return pb.FAILED_UNKNOWN_USAGE, pb.Usage()
    factor = rng.uniform(1.02, 1.4) if roll < 0.23 else rng.uniform(0.3, 0.95)
    total = int(reserved.tokens * factor)
    cached = int(total * rng.uniform(0.0, 0.2))
    output = int(total * rng.uniform(0.15, 0.35))
    usage = pb.Usage(
        request_count=reserved.requests,
        input_tokens=total - cached - output,
        output_tokens=output,
        cached_tokens=cached,
    )
    return (pb.FAILED_WITH_USAGE if roll > 0.97 else pb.SUCCESS), usage


async def run_job(stub: pb_grpc.RateLimiterAsyncStub, job_type: str, n: int, stats: Stats, rng: random.Random) -> None:
    outcomes = stats.outcomes[job_type]
    outcomes.attempts += 1
    stats.acquiring += 1
    try:
        grant = await stub.Acquire(
            pb.AcquireRequest(job_id=f"{job_type}-{n}-{os.urandom(4).hex()}", job_type=job_type),
            timeout=ACQUIRE_DEADLINE_S,
        )
    except grpc.aio.AioRpcError as e:
        if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            outcomes.exhausted += 1
        elif e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            outcomes.deadline += 1
        else:
            outcomes.failed += 1
            stats.errors.append(f"Acquire {job_type}: {e.code().name} {e.details()}")
        await asyncio.sleep(rng.uniform(*EXHAUSTED_BACKOFF_S))
        return
    finally:
        stats.acquiring -= 1
    outcomes.granted += 1
    cell = stats.cells[grant.model_id, job_type]
    cell.count += 1
    if grant.waited_ms >= WAITED_MS:
        cell.waited += 1
        cell.waited_ms += grant.waited_ms
    if len(grant.models_tried) > 1:
        cell.escalated += 1
    await asyncio.sleep(rng.uniform(*JOB_MIX[job_type].run_s))
    outcome, usage = actual_usage(rng, grant.reserved)
    try:
        released = await stub.Release(
            pb.ReleaseRequest(lease_id=grant.lease_id, outcome=outcome, actual=usage), timeout=RELEASE_DEADLINE_S
        )
    except grpc.aio.AioRpcError as e:
        stats.errors.append(f"Release {job_type}: {e.code().name} {e.details()}")
        return
    cell.refunded_tokens += released.refunded_tokens
    cell.overage_tokens += released.overage_tokens
    cell.unknown_usage += outcome == pb.FAILED_UNKNOWN_USAGE
    cell.cost_usd += released.cost_usd


async def worker(
    stub: pb_grpc.RateLimiterAsyncStub, job_type: str, stop: asyncio.Event, stats: Stats, rng: random.Random
) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        await run_job(stub, job_type, n, stats, rng)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(*THINK_S))


# ----- display -----------------------------------------------------------------------------------


async def in_flight(stub: pb_grpc.RateLimiterAsyncStub, instance_ids: list[str], models: list[str]) -> str:
    totals = dict.fromkeys(models, 0)
    queued = 0
    for instance_id in instance_ids:
        try:
            reply = await stub.GetAllocation(pb.GetAllocationRequest(instance_id=instance_id), timeout=1)
        except grpc.aio.AioRpcError:
            return "   (allocation unavailable)"
        for model, rows in reply.model_job_types.items():
            totals[model] = totals.get(model, 0) + sum(r.in_flight for r in rows.job_types.values())
            queued += sum(r.waiting for r in rows.job_types.values())
    return "".join(f"{totals[m]:>{len(short(m)) + 2}}" for m in models) + f"{queued:>8}"


async def progress(
    stub: pb_grpc.RateLimiterAsyncStub, instance_ids: list[str], models: list[str], stats: Stats, stop: asyncio.Event
) -> None:
    header = "".join(f"  {short(m)}" for m in models)
    print(
        f"\n{'time':>5} {'granted':>8} {'acquiring':>10} {'escalated':>10} {'exhausted':>10} {'deadline':>9}"
        f"  | in flight:{header}  queued",
        flush=True,
    )
    started = time.monotonic()
    tick = 0
    while not stop.is_set():
        tick += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, started + tick - time.monotonic()))
        flights = await in_flight(stub, instance_ids, models)
        print(
            f"{time.monotonic() - started:>4.0f}s {stats.total('granted'):>8} {stats.acquiring:>10} "
            f"{stats.escalated:>10} {stats.total('exhausted'):>10} {stats.total('deadline'):>9}  | {' ' * 9}{flights}",
            flush=True,
        )


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [
        "  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))
    ]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append(
            "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        )
    return "\n".join(lines)


def granted_row(model: str, job_type: str, g: Granted) -> list[str]:
    avg = f"{g.waited_ms / g.waited:.0f}" if g.waited else "-"
    return [
        model,
        job_type,
        str(g.count),
        str(g.waited),
        avg,
        str(g.escalated),
        f"{g.refunded_tokens:,}",
        f"{g.overage_tokens:,}",
        str(g.unknown_usage),
        f"{g.cost_usd:.4f}",
    ]


def summary(stats: Stats, models: list[str]) -> str:
    rows: list[list[str]] = []
    grand = Granted()
    for model in models:
        total = Granted()
        for job_type in JOB_MIX:
            g = stats.cells.get((model, job_type))
            if g is None:
                continue
            rows.append(granted_row(model, job_type, g))
            for acc in (total, grand):
                for name in vars(g):
                    setattr(acc, name, getattr(acc, name) + getattr(g, name))
        if total.count:
            rows.append(granted_row(model, "(all)", total))
    rows.append(granted_row("all models", "(all)", grand))
    headers = ["model", "job type", "granted", "waited", "avg wait ms", "escalated"]
    headers += ["refunded tokens", "overage tokens", "unknown usage", "cost USD"]
    by_type = [
        [t, "", str(o.attempts), str(o.granted), str(o.exhausted), str(o.deadline), str(o.failed)]
        for t, o in ((t, stats.outcomes[t]) for t in JOB_MIX)
    ]
    type_headers = ["job type", "", "attempts", "granted", "exhausted", "deadline", "other errors"]
    return (
        "Granted jobs by model and job type\n"
        + table(headers, rows)
        + f"\n(waited: granted after at least {WAITED_MS} ms in the service; escalated: granted on a model"
        " after the first of the order)\n\nAcquire outcomes by job type\n" + table(type_headers, by_type)
    )


# ----- main --------------------------------------------------------------------------------------


async def drive(
    proxy_port: int, instance_ports: list[int], models: list[str], seconds: float, seed: int | None
) -> tuple[Stats, int]:
    """Runs the load; returns the statistics and the signal that cut it short (0 if none)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    stopped_by = 0

    def on_signal(signum: int) -> None:
        nonlocal stopped_by
        stopped_by = signum
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    for port in [*instance_ports, proxy_port]:
        await wait_serving(port)
    stats = Stats()
    rng = random.Random(seed)
    async with grpc.aio.insecure_channel(f"{HOST}:{proxy_port}") as channel:
        stub: pb_grpc.RateLimiterAsyncStub = pb_grpc.RateLimiterStub(channel)
        instance_ids = []
        for port in instance_ports:
            async with grpc.aio.insecure_channel(f"{HOST}:{port}") as direct:
                reply = await pb_grpc.RateLimiterStub(direct).GetAllocation(pb.GetAllocationRequest(), timeout=5)
                instance_ids.append(reply.instance_id)
        workers = [
            asyncio.create_task(worker(stub, job_type, stop, stats, random.Random(rng.random())))
            for job_type, mix in JOB_MIX.items()
            for _ in range(mix.workers)
        ]
        display = asyncio.create_task(progress(stub, instance_ids, models, stats, stop))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        stop.set()
        _, late = await asyncio.wait(workers, timeout=SIGNAL_DRAIN_S if stopped_by else DRAIN_S)
        for task in [*late, display]:
            task.cancel()
        await asyncio.gather(*late, display, return_exceptions=True)
    print(flush=True)
    return stats, stopped_by


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m rllocal.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="how long to drive the load (default 20)")
    p.add_argument("--seed", type=int, help="seed of the random load, for a repeatable run")
    return p.parse_args(argv)


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def run(args: argparse.Namespace, cluster: Cluster) -> int:
    redis_url = f"redis://{HOST}:{cluster.start_redis().port}/0"
    config = cluster.workdir / "demo.yaml"
    models = write_demo_config(config)
    instances = [cluster.start_module("rlservice", ["--config", str(config), "--redis-url", redis_url]) for _ in "ab"]
    proxy = cluster.start_module("rlproxy", ["--targets", ",".join(f"{HOST}:{c.port}" for c in instances)])
    for c in cluster.children:
        print(f"started {c.name} pid {c.proc.pid} on {HOST}:{c.port}", flush=True)
    print(f"driving {sum(m.workers for m in JOB_MIX.values())} workers through the proxy for {args.seconds:g} s")
    ports = [c.port for c in instances]
    stats, stopped_by = uvloop.run(drive(proxy.port, ports, models, args.seconds, args.seed))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    cluster.stop()
    if stopped_by:
        print(f"stopped early by {signal.Signals(stopped_by).name}")
    print(summary(stats, models))
    for error in stats.errors[:10]:
        print(f"error: {error}")
    return 128 + stopped_by if stopped_by else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    with tempfile.TemporaryDirectory(prefix="rl-demo-") as tmp:
        cluster = Cluster(Path(tmp))
        try:
            return run(args, cluster)
        except Interrupted as e:
            print(f"\nstopped by {e}", file=sys.stderr)
            return 128 + e.signum
        except RuntimeError as e:
            print(f"demo: {e}", file=sys.stderr)
            return 1
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
