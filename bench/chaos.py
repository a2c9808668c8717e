"""Chaos run: three instances and the proxy under a mixed load while instances are SIGKILLed and
restarted every few seconds and Redis (with an append-only file) is restarted once, midway. With
--redis-cluster the ledger is a Redis Cluster of three masters with a replica each instead, and
midway the master serving the first model's slot is SIGKILLed once: its replica takes over, and the
old master comes back as the new one's replica.

It checks, and exits non-zero when one fails:
- from the clients' side, that no model's committed tokens or requests went above a limit in any
  minute or day window, nor its leases held above max_concurrent (see chaos_accounting.py for why
  that view is a lower bound of the ledger's, so that a breach in it is a real one);
- from the ledger, read straight from Redis several times a second, the same for the current and the
  previous minute window, the day window and the in-flight totals;
- for the model with rolling windows, at the end: that a provider's bucket with the same limits,
  started full and replayed from the ledger's own record of every lease (rllocal/bucket_replay.py),
  always held what each grant took;
- at the end, once every lease's TTL and every dead instance's staleness has run out: in-flight back
  to 0, no open lease left, only the three live instances registered;
- that every error the clients got is one the contract names for what happened (RESOURCE_EXHAUSTED,
  UNAVAILABLE, NOT_FOUND, DEADLINE_EXCEEDED); each is counted with its message.

    python bench/chaos.py [--seconds 180] [--clients 24] [--kill-every 5] [--seed 1] [--redis-cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import uvloop
import yaml
from chaos_accounting import DIMENSIONS, ClientView

from rllocal.bucket_replay import Breach, replay
from rllocal.ledger_view import DAY_MS, MINUTE_MS, Ledger, LedgerView
from rllocal.processes import RedisServer, poll_until, spawn_module, stop_processes
from rllocal.redis_cluster import LocalCluster, NodeSettings
from rlproto import ratelimit_pb2 as pb
from rlproto import ratelimit_pb2_grpc as pb_grpc

HOST = "127.0.0.1"
BOOT_TIMEOUT_S = 30.0
INSTANCES = 3
TTL_MS = 4000
CALL_DEADLINE_S = 3.0
STALL_S = 0.5
ALLOWED_CODES = {"RESOURCE_EXHAUSTED", "UNAVAILABLE", "NOT_FOUND", "DEADLINE_EXCEEDED"}
# How long a cluster master may be unreachable before its replica is promoted.
NODE_TIMEOUT_MS = 3000
PROMOTION_TIMEOUT_S = 60.0

# Tight limits, so that windows fill up and every check runs against a limit that binds: the first
# model's minute windows fill in seconds, the second's day window within about two minutes, and the
# third caps concurrency; the rolling model's buckets empty in seconds and then refill continuously;
# jobs wait a little, then escalate.
CONFIG: dict[str, Any] = {
    "models": {
        "tight-tpm": {"tokens_per_minute": 400_000, "requests_per_minute": 300},
        "rolling": {"tokens_per_minute": 200_000, "requests_per_minute": 150, "window": "rolling"},
        "tight-rpm": {"requests_per_minute": 240, "tokens_per_day": 2_000_000},
        "concurrent": {"max_concurrent_requests": 8},
    },
    "escalation_order": ["tight-tpm", "rolling", "tight-rpm", "concurrent"],
    "job_types": {
        "small": {
            "estimated_tokens": 2000,
            "max_wait_ms": {"tight-tpm": 300, "rolling": 300, "tight-rpm": 300, "concurrent": 1000},
        },
        "large": {
            "estimated_tokens": 12000,
            "estimated_requests": 2,
            "ratio": {"initial": 0.3, "flexible": False},
            "max_wait_ms": {"tight-tpm": 500, "rolling": 500, "tight-rpm": 0, "concurrent": 1000},
        },
        "chat": {
            "estimated_tokens": 4000,
            "max_wait_ms": {"tight-tpm": 0, "rolling": 200, "tight-rpm": 200, "concurrent": 500},
        },
    },
    # Idle instances lend their share: the global check alone then holds the limit.
    "lend_idle_capacity": True,
    "lease_ttl_ms": TTL_MS,
    "heartbeat_interval_ms": 500,
    "stale_after_ms": 2000,
}
JOB_MIX = {"small": 0.5, "large": 0.2, "chat": 0.3}
# How clients end their jobs: the rest succeed.
FAILED_WITH_USAGE, FAILED_UNKNOWN, ABANDONED = 0.08, 0.08, 0.04


@dataclass
class Supervised:
    """One instance: started on a fixed port so that the proxy's target list stays valid."""

    index: int
    config: Path
    # --redis-url URL, and --redis-cluster on a cluster
    ledger_args: list[str]
    workdir: Path
    port: int = 0
    proc: subprocess.Popen[str] | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        log = self.workdir / f"rlservice-{self.index}-{self.starts}.log"
        args = ["--port", str(self.port), "--config", str(self.config), *self.ledger_args]
        self.proc, self.port = spawn_module("rlservice", args, log, BOOT_TIMEOUT_S)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class LedgerWatch:
    """What the ledger held, sampled while the run goes on."""

    samples: int = 0
    unreachable: int = 0
    # (model, dimension) -> highest value seen
    highest: dict[tuple[str, str], int] = field(default_factory=dict)
    breaches: list[str] = field(default_factory=list)

    def see(self, model: str, dim: str, value: int, limit: int, where: str) -> None:
        key = (model, dim)
        self.highest[key] = max(self.highest.get(key, 0), value)
        if value > limit:
            self.breaches.append(f"{model} {dim} {value} > {limit} ({where})")


def limit_of(model: str, dim: str) -> int:
    return int(CONFIG["models"][model].get(dim, 0))


# Models counted in fixed windows; the rolling one has no windows to check and is replayed instead.
FIXED = [name for name, model in CONFIG["models"].items() if model.get("window") != "rolling"]
ROLLING = [name for name in CONFIG["models"] if name not in FIXED]


def rolling_breaches(ledger: Ledger) -> dict[str, tuple[int, list[Breach]]]:
    """Per rolling model and dimension: the leases replayed, and the grants above the bucket."""
    out = {}
    for model in ROLLING:
        leases = ledger.closed_leases(model)
        for dim, requests in (("tokens_per_minute", False), ("requests_per_minute", True)):
            out[f"{model} {dim}"] = (len(leases), replay(leases, TTL_MS, limit_of(model, dim), MINUTE_MS, requests))
    return out


def sample_ledger(ledger: Ledger, watch: LedgerWatch) -> None:
    now = ledger.now_ms()
    minute, day = now // MINUTE_MS, now // DAY_MS
    for model in CONFIG["models"]:
        for dim, (kind, part) in DIMENSIONS.items():
            limit = limit_of(model, dim)
            if not limit or model not in FIXED:
                continue
            windows = (minute - 1, minute) if kind == "m" else (day,)
            for window in windows:
                value = ledger.committed(model, window, kind)[part]
                watch.see(model, dim, value, limit, f"window {kind}{window}")
        conc = limit_of(model, "max_concurrent_requests")
        if conc:
            total, by_instance = ledger.in_flight(model)
            watch.see(model, "in_flight", total, conc, "total")
            watch.see(model, "in_flight_by_instance", by_instance, conc, "per instance, added up")
    watch.samples += 1


async def watch_ledger(ledger: Ledger, watch: LedgerWatch, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await asyncio.to_thread(sample_ledger, ledger, watch)
        except OSError:
            watch.unreachable += 1
        except Exception as e:
            # redis-py's errors while Redis restarts; anything else is a bug in this run.
            if type(e).__module__.split(".")[0] != "redis":
                raise
            watch.unreachable += 1
        await asyncio.sleep(0.2)


def usage_of(rng: random.Random, tokens: int, requests: int) -> pb.Usage:
    used = int(tokens * rng.uniform(0.2, 1.0))
    out = used // 4
    return pb.Usage(request_count=rng.randint(1, requests), input_tokens=used - out, output_tokens=out)


async def client(stub: pb_grpc.RateLimiterAsyncStub, rng: random.Random, view: ClientView, stop: asyncio.Event) -> None:
    names, weights = list(JOB_MIX), list(JOB_MIX.values())
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        job_type = rng.choices(names, weights)[0]
        # A new job id on every attempt: a retry of the same id could be answered with the lease of an
        # earlier attempt, which this view would then count twice.
        request = pb.AcquireRequest(job_id=f"chaos-{os.urandom(8).hex()}", job_type=job_type, lease_ttl_ms=TTL_MS)
        view.calls["Acquire"] += 1
        try:
            grant = await stub.Acquire(request, timeout=CALL_DEADLINE_S)
        except grpc.aio.AioRpcError as e:
            view.error(loop.time(), "Acquire", e.code(), e.details() or "")
            await asyncio.sleep(rng.uniform(0.05, 0.2))
            continue
        model = grant.model_id
        minute, day = view.granted(
            loop.time(), model, grant.lease_expires_at_ms - TTL_MS, grant.reserved.tokens, grant.reserved.requests
        )
        await asyncio.sleep(rng.uniform(0.05, 0.4))
        roll = rng.random()
        if roll < ABANDONED:
            view.outcomes["abandoned (left to expire)"] += 1
            view.released(loop.time(), model)
            continue
        if roll < ABANDONED + FAILED_UNKNOWN:
            outcome, actual, name = pb.FAILED_UNKNOWN_USAGE, pb.Usage(), "FAILED_UNKNOWN_USAGE"
        else:
            actual = usage_of(rng, grant.reserved.tokens, grant.reserved.requests)
            failed = roll < ABANDONED + FAILED_UNKNOWN + FAILED_WITH_USAGE
            outcome, name = (pb.FAILED_WITH_USAGE, "FAILED_WITH_USAGE") if failed else (pb.SUCCESS, "SUCCESS")
        first_sent = loop.time()
        for attempt in range(3):
            sent = loop.time()
            view.calls["Release"] += 1
            try:
                reply = await stub.Release(
                    pb.ReleaseRequest(lease_id=grant.lease_id, outcome=outcome, actual=actual),
                    timeout=CALL_DEADLINE_S,
                )
            except grpc.aio.AioRpcError as e:
                view.error(loop.time(), "Release", e.code(), e.details() or "")
                if e.code() == grpc.StatusCode.UNAVAILABLE and attempt < 2:
                    await asyncio.sleep(0.3)
                    continue
                view.outcomes[f"{name}, no answer from the ledger"] += 1
                if outcome != pb.FAILED_UNKNOWN_USAGE:
                    tokens = actual.input_tokens + actual.output_tokens + actual.cached_tokens
                    refund_t = max(0, grant.reserved.tokens - tokens)
                    refund_r = max(0, grant.reserved.requests - actual.request_count)
                    view.refunded(first_sent, model, minute, day, True, refund_t, refund_r)
                break
            view.outcomes[name] += 1
            view.refunded(sent, model, minute, day, reply.same_window, reply.refunded_tokens, reply.refunded_requests)
            break
        view.released(first_sent, model)


@dataclass
class Chaos:
    """What was done to the processes, and when, on the run's clock (the event loop's)."""

    started: float = 0.0
    wall_started: float = field(default_factory=time.monotonic)
    kills: int = 0
    redis_down_s: float = 0.0
    timeline: list[tuple[float, str]] = field(default_factory=list)

    def note(self, what: str) -> None:
        self.timeline.append((asyncio.get_running_loop().time() - self.started, what))


async def killer(
    instances: list[Supervised], rng: random.Random, every_s: float, stop: asyncio.Event, chaos: Chaos
) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s * rng.uniform(0.7, 1.3))
        if stop.is_set():
            return
        victim = rng.choice(instances)
        victim.kill()
        chaos.kills += 1
        chaos.note(f"instance {victim.index} killed")
        await asyncio.sleep(rng.uniform(0.2, 1.5))
        await start_again(victim)
        chaos.note(f"instance {victim.index} listening again")


async def start_again(instance: Supervised) -> None:
    """Restarts an instance on its port; the port may still be held a moment after a kill."""
    for attempt in range(10):
        try:
            await asyncio.to_thread(instance.start)
            return
        except RuntimeError as e:
            print(f"instance {instance.index} did not start again (attempt {attempt + 1}): {e}", file=sys.stderr)
            await asyncio.sleep(0.5)
    raise RuntimeError(f"instance {instance.index} could not be started again on port {instance.port}")


async def restart_redis(redis: RedisServer, how: str, at_s: float, stop: asyncio.Event, chaos: Chaos) -> None:
    try:
        await asyncio.wait_for(stop.wait(), at_s)
        return
    except TimeoutError:
        pass
    started = time.monotonic()
    chaos.note(f"Redis stopping ({how})")
    await asyncio.to_thread(redis.stop if how == "kill" else redis.shutdown)
    chaos.note("Redis gone")
    await asyncio.sleep(1.0)
    await asyncio.to_thread(redis.restart, how == "empty")
    chaos.redis_down_s = time.monotonic() - started
    chaos.note("Redis answers again")


async def kill_master(cluster: LocalCluster, ledger: Ledger, at_s: float, stop: asyncio.Event, chaos: Chaos) -> None:
    """SIGKILLs the master serving the first model's slot, waits for its replica to be promoted, then
    starts the old master again (it rejoins as the new master's replica)."""
    try:
        await asyncio.wait_for(stop.wait(), at_s)
        return
    except TimeoutError:
        pass
    model = next(iter(CONFIG["models"]))
    master = await asyncio.to_thread(cluster.master_of, ledger.key(model))
    replica = cluster.replica_of(master)
    started = time.monotonic()
    chaos.note(f"master of {model}'s shard killed")
    master.stop()
    await asyncio.to_thread(
        poll_until, lambda: replica.role() == "master", PROMOTION_TIMEOUT_S, 0.05, "the replica to be promoted"
    )
    chaos.redis_down_s = time.monotonic() - started
    chaos.note("its replica promoted")
    await asyncio.to_thread(master.restart)
    chaos.note("the old master back, as a replica")


async def watch_stalls(chaos: Chaos, stop: asyncio.Event) -> None:
    """Notes when this process could not run for a while: on a loaded machine every process stalls
    alike, and calls then outlive their deadlines whatever the service does."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(0.1)
        late = loop.time() - before - 0.1
        if late > STALL_S:
            chaos.note(f"this process stalled {late:.1f} s")


def settled(ledger: Ledger) -> bool:
    view = ledger.view()
    return (
        len(view.instances) == INSTANCES
        and not any(view.in_flight.values())
        and not any(view.in_flight_by_instance.values())
        and not view.open_leases
    )


async def run(
    args: argparse.Namespace, redis: RedisServer | LocalCluster, instances: list[Supervised], proxy_port: int
) -> int:
    rng = random.Random(args.seed)
    view, watch, chaos = ClientView(), LedgerWatch(), Chaos(started=asyncio.get_running_loop().time())
    ledger = Ledger(redis.client(), cluster=isinstance(redis, LocalCluster))
    stop_load, stop_chaos, stop_watch = asyncio.Event(), asyncio.Event(), asyncio.Event()
    ledger_fault = (
        kill_master(redis, ledger, args.seconds / 2, stop_chaos, chaos)
        if isinstance(redis, LocalCluster)
        else restart_redis(redis, args.redis_restart, args.seconds / 2, stop_chaos, chaos)
    )
    async with grpc.aio.insecure_channel(f"{HOST}:{proxy_port}") as channel:
        stub = pb_grpc.RateLimiterStub(channel)
        clients = [
            asyncio.create_task(client(stub, random.Random(rng.random()), view, stop_load)) for _ in range(args.clients)
        ]
        watcher = asyncio.create_task(watch_ledger(ledger, watch, stop_watch))
        stalls = asyncio.create_task(watch_stalls(chaos, stop_watch))
        chaos_tasks = [
            asyncio.create_task(killer(instances, random.Random(rng.random()), args.kill_every, stop_chaos, chaos)),
            asyncio.create_task(ledger_fault),
        ]
        started = time.monotonic()
        await asyncio.sleep(args.seconds)
        stop_chaos.set()
        await asyncio.gather(*chaos_tasks)
        for instance in instances:
            if not instance.alive():
                await start_again(instance)
        stop_load.set()
        await asyncio.gather(*clients)
        load_s = time.monotonic() - started
    # Leases left to expire and those of killed instances close within a TTL or a staleness.
    settle_started = time.monotonic()
    settle_limit = TTL_MS / 1000 + CONFIG["stale_after_ms"] / 1000 + 30
    try:
        await asyncio.to_thread(poll_until, lambda: settled(ledger), settle_limit, 0.2, "the ledger to settle")
        clean = True
    except AssertionError:
        clean = False
    settle_s = time.monotonic() - settle_started
    stop_watch.set()
    await asyncio.gather(watcher, stalls)
    end = ledger.view()
    return report(args, view, watch, chaos, end, clean, load_s, settle_s, rolling_breaches(ledger))


def spans(times: list[float], gap: float = 1.0) -> str:
    """Times grouped into runs with no gap above `gap` seconds: "12.0-13.4 (9), 40.2 (1)"."""
    out: list[str] = []
    run: list[float] = []
    for t in sorted(times):
        if run and t - run[-1] > gap:
            out.append(_span(run))
            run = []
        run.append(t)
    if run:
        out.append(_span(run))
    return ", ".join(out)


def _span(run: list[float]) -> str:
    return f"{run[0]:.1f} ({len(run)})" if len(run) == 1 else f"{run[0]:.1f}-{run[-1]:.1f} ({len(run)})"


def report(
    args: argparse.Namespace,
    view: ClientView,
    watch: LedgerWatch,
    chaos: Chaos,
    end: LedgerView,
    clean: bool,
    load_s: float,
    settle_s: float,
    replayed: dict[str, tuple[int, list[Breach]]],
) -> int:
    failures: list[str] = []
    began = time.strftime("%H:%M:%S UTC", time.gmtime(time.time() - (time.monotonic() - chaos.wall_started)))
    print(f"# chaos run: {load_s:.0f} s of load from {began}, {args.clients} clients, seed {args.seed}")
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, {platform.platform()}")
    if args.redis_cluster:
        ledger_fault = f"a cluster master killed once, its replica promoted {chaos.redis_down_s:.1f} s later"
    else:
        ledger_fault = f"Redis restarted once ({args.redis_restart}), down for {chaos.redis_down_s:.1f} s"
    print(f"instance kills (SIGKILL, then restart): {chaos.kills}; {ledger_fault}; appendfsync {args.appendfsync}")
    print(f"calls: {dict(view.calls)}; grants per model: {dict(view.grants)}")
    print(f"job outcomes: {dict(view.outcomes)}")
    print("\n## errors (rpc, code, message)")
    for (rpc, code, text), count in sorted(view.errors.items(), key=lambda kv: -kv[1]):
        print(f"{count:7d}  {rpc} {code}: {text}")
        print(f"         at s: {spans([t - chaos.started for t in view.error_times[(rpc, code, text)]])}")
        if code not in ALLOWED_CODES:
            failures.append(f"{rpc} answered {code}: {text}")
    print("\n## what was done, at s")
    print("; ".join(f"{at:.1f} {what}" for at, what in chaos.timeline))
    print("\n## clients' view: highest committed in any window, and leases held, against the limits")
    peaks = view.peaks()
    for model in CONFIG["models"]:
        for dim, (kind, part) in DIMENSIONS.items():
            limit = limit_of(model, dim)
            if not limit or model not in FIXED:
                continue
            highest = max((p[part] for (m, k, _), p in peaks.items() if m == model and k == kind), default=0)
            windows = sum(1 for (m, k, _) in peaks if m == model and k == kind)
            print(f"{model:11s} {dim:20s} {highest:9d} / {limit:9d} over {windows} window(s)")
            if highest > limit:
                failures.append(f"clients saw {model} {dim} at {highest}, limit {limit}")
        conc = limit_of(model, "max_concurrent_requests")
        if conc:
            held = view.peak_held().get(model, 0)
            print(f"{model:11s} {'leases held':20s} {held:9d} / {conc:9d}")
            if held > conc:
                failures.append(f"clients held {held} leases on {model} at once, limit {conc}")
    print(f"\n## ledger, sampled {watch.samples} times ({watch.unreachable} samples while Redis was away)")
    for (model, dim), value in sorted(watch.highest.items()):
        limit = limit_of(model, "max_concurrent_requests" if dim.startswith("in_flight") else dim)
        print(f"{model:11s} {dim:22s} {value:9d} / {limit:9d}")
    failures += [f"ledger: {b}" for b in watch.breaches]
    print("\n## rolling windows: a provider's bucket replayed from the ledger's lease records")
    for what, (leases, breaches) in replayed.items():
        print(f"{what}: {leases} leases replayed, {len(breaches)} grant(s) above what the bucket held")
        failures += [f"{what}: lease {b.lease_id} took {b.asked} at {b.at_ms} with {b.held:.0f} held" for b in breaches]
    print(f"\n## at the end (settled after {settle_s:.1f} s)")
    print(f"instances: {len(end.instances)}; in flight: {end.in_flight} (per instance, added up: ")
    print(f"{end.in_flight_by_instance}); open leases: {len(end.open_leases)}")
    if not clean:
        failures.append(f"the ledger did not settle: {end}")
    print("\n## verdict")
    for failure in failures:
        print(f"FAIL {failure}")
    print("all invariants held" if not failures else f"{len(failures)} invariant(s) failed")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=180.0, help="how long the load and the chaos last")
    parser.add_argument("--clients", type=int, default=24, help="concurrent client tasks")
    parser.add_argument("--kill-every", type=float, default=5.0, help="mean seconds between instance kills")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--appendfsync", choices=("everysec", "always"), default="everysec", help="Redis's fsync policy"
    )
    parser.add_argument(
        "--redis-restart",
        choices=("shutdown", "kill", "empty"),
        default="shutdown",
        help="how Redis is restarted midway: SIGTERM (it writes its file out), SIGKILL (it loses what was not"
        " fsynced yet), or SIGTERM and back with no data (a restart without persistence: the checks must fail)",
    )
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="the ledger on a Redis Cluster of three masters with a replica each; midway the master of the first"
        " model's slot is killed once (instead of the Redis restart)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs after a run that passed")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="chaos-"))
    (work / "redis").mkdir()
    redis: RedisServer | LocalCluster
    if args.redis_cluster:
        settings = NodeSettings(node_timeout_ms=NODE_TIMEOUT_MS, appendfsync=args.appendfsync)
        redis = LocalCluster(work / "redis", replicas=True, settings=settings)
        ledger_args = ["--redis-url", redis.url, "--redis-cluster"]
    else:
        redis = RedisServer(work / "redis", appendfsync=args.appendfsync)
        ledger_args = ["--redis-url", redis.url]
    redis.start()
    config = work / "chaos.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    instances = [Supervised(i, config, ledger_args, work) for i in range(INSTANCES)]
    proxy: subprocess.Popen[str] | None = None
    try:
        for instance in instances:
            instance.start()
        targets = ",".join(f"{HOST}:{i.port}" for i in instances)
        proxy, proxy_port = spawn_module("rlproxy", ["--port", "0", "--targets", targets], work / "rlproxy.log", 30)
        code = uvloop.run(run(args, redis, instances, proxy_port))
    finally:
        stop_processes([proxy, *(i.proc for i in instances)])
        redis.stop()
    if code == 0 and not args.keep_logs:
        shutil.rmtree(work)
    else:
        print(f"logs: {work}")
    return code


if __name__ == "__main__":
    sys.exit(main())
