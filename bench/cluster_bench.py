"""How far a Redis Cluster takes a deployment: the same Acquire + Release load, spread evenly over six
models, on one Redis (one ledger for every model), on a Redis Cluster of one master (a ledger per
model, all on one Redis process) and on one of three masters, and what each Redis process spends per
RPC. The one-master cluster tells what a ledger per model costs apart from what sharding gains. A
last set-up sends the load to the three-master cluster's instances on one master's models only:
that master is then as busy as the one Redis, as every master would be at three times the load.

    python bench/cluster_bench.py [--pairs 24000] [--concurrency 48] [--rounds 4] [--instances 2]

Redis runs the ledger's scripts on one thread, so what bounds a deployment is the CPU a Redis
spends per RPC, not the throughput this machine reaches: a Redis saturates when its one core is
busy. On a cluster each model's ledger lives on one master, so the deployment saturates when its
busiest master does: its ceiling is the total RPCs over the busiest master's CPU seconds, with the
load spread as measured. This machine has two cores for the load, the instances and every Redis,
so the throughput itself cannot triple here: the ceilings are computed from CPU per RPC.

The six models' hash tags land two on each master (checked at the start). Rounds alternate
between the set-ups so that drift in the machine's load hits all alike, after a warm-up of each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc.aio
import redis
import uvloop
import yaml
from pairs import JOB_TYPE, Samples, drive
from service_bench import cpu_seconds, evalsha_calls

from rllocal.processes import RedisServer, poll_until, running
from rllocal.redis_cluster import ClusterNode, LocalCluster
from rlproto import ratelimit_pb2_grpc as pb_grpc
from rlservice.backend.ledgers import cluster_prefix

HOST = "127.0.0.1"
PREFIX = "rl"
MASTERS = 3
# Chosen so that their hash tags {rl:MODEL} fall two on each of the three masters' slot ranges.
MODELS = ("model-a", "model-e", "model-d", "model-h", "model-b", "model-c")
CONFIG: dict[str, Any] = {
    "models": {name: {"tokens_per_minute": 10**12, "requests_per_minute": 10**10} for name in MODELS},
    "job_types": {JOB_TYPE: {"estimated_tokens": 100, "ratio": {"initial": 1.0}}},
    "lease_ttl_ms": 3_600_000,
}
TARGET_RATIO = 2.7
# The share of a core each shard is planned at in the sizing table: room for bursts and failovers.
PLANNED_SHARE = 0.7
TARGET_JOBS = (10_000, 50_000, 100_000)
BOOT_TIMEOUT_S = 60.0
# The size of the events this load publishes (a model's state, when another instance must hear it).
EVENT_BYTES = 270


@dataclass
class Shard:
    """One Redis process: its models, and what it spent over the measured rounds."""

    name: str
    pid: int
    client: redis.Redis
    models: list[str]
    node: ClusterNode | None = None
    cpu: float = 0.0
    scripts: int = 0
    bus_publishes: int = 0
    wakeups: int = 0
    idle_share: float = 0.0

    def counters(self) -> tuple[int, int, int]:
        """EVALSHA calls so far, PUBLISH messages received from other nodes over the cluster bus, and
        the times the process gave up the CPU to wait (its event loop going back to sleep)."""
        received = 0 if self.node is None else int(self.node.info().get("cluster_stats_messages_publish_received", 0))
        status = Path(f"/proc/{self.pid}/status").read_text()
        waits = int(status.split("voluntary_ctxt_switches:", 1)[1].split()[0])
        return evalsha_calls(self.client), received, waits


@dataclass
class SetUp:
    name: str
    addresses: list[str]
    shards: list[Shard]
    models: tuple[str, ...] = MODELS
    rpcs: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    seconds: float = 0.0

    def shard_rpcs(self, shard: Shard) -> int:
        return sum(self.rpcs.get(m, 0) for m in shard.models)

    @property
    def total_rpcs(self) -> int:
        return sum(self.rpcs.values())

    @property
    def ceiling(self) -> float:
        """RPC/s of the whole deployment when its busiest Redis has a core's worth of CPU."""
        return self.total_rpcs / max(s.cpu for s in self.shards)


async def _load(setup: SetUp, pairs: int, concurrency: int, until: float, tag: str) -> list[tuple[str, Samples]]:
    """`pairs` pairs over every instance and the set-up's models evenly, at `concurrency` in all."""
    channels = [grpc.aio.insecure_channel(a) for a in setup.addresses]
    try:
        stubs: list[pb_grpc.RateLimiterAsyncStub] = [pb_grpc.RateLimiterStub(c) for c in channels]
        lanes = [(stub, n, model) for n, stub in enumerate(stubs) for model in setup.models]
        results = await asyncio.gather(
            *(
                drive(
                    stub,
                    pairs // len(lanes),
                    max(1, concurrency // len(lanes)),
                    until,
                    f"{tag}-{n}-{model}",
                    None,
                    model,
                )
                for stub, n, model in lanes
            )
        )
    finally:
        for c in channels:
            await c.close(None)
    return [(model, samples) for (_, _, model), samples in zip(lanes, results, strict=True)]


def measured_round(setup: SetUp, args: argparse.Namespace, tag: str) -> None:
    before = [(cpu_seconds(s.pid), *s.counters()) for s in setup.shards]
    results = uvloop.run(_load(setup, args.pairs // args.rounds, args.concurrency, time.perf_counter() + 300, tag))
    for shard, (cpu, scripts, received, waits) in zip(setup.shards, before, strict=True):
        shard.cpu += cpu_seconds(shard.pid) - cpu
        calls, bus, wakeups = shard.counters()
        shard.scripts += calls - scripts
        shard.bus_publishes += bus - received
        shard.wakeups += wakeups - waits
    for model, samples in results:
        setup.rpcs[model] = setup.rpcs.get(model, 0) + 2 * len(samples.pairs)
        setup.errors += samples.errors
    setup.seconds += max(samples.seconds for _, samples in results)


def measure_idle(setups: list[SetUp], seconds: float) -> None:
    """Each Redis's CPU with the instances up and no load: heartbeats, the cluster bus, cron."""
    shards = [s for setup in setups for s in setup.shards]
    before = [cpu_seconds(s.pid) for s in shards]
    started = time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - started
    for shard, cpu in zip(shards, before, strict=True):
        shard.idle_share = (cpu_seconds(shard.pid) - cpu) / elapsed


def bus_cost_us(cluster: LocalCluster, size: int, messages: int = 5_000) -> float:
    """CPU a master spends on a PUBLISH another master forwards over the cluster bus: `messages`
    published on the first master one at a time, as the ledger's calls publish, so that each
    reaches the others alone; the others' CPU per message."""
    receivers = cluster.masters[1:]
    pids = [m.proc.pid for m in receivers if m.proc is not None]

    def received() -> list[int]:
        return [int(m.info().get("cluster_stats_messages_publish_received", 0)) for m in receivers]

    counts = received()
    before = [cpu_seconds(pid) for pid in pids]
    sender = cluster.masters[0].client()
    payload = "x" * size
    for _ in range(messages):
        sender.publish("{" + cluster_prefix(PREFIX, MODELS[0]) + "}:events", payload)
    poll_until(
        lambda: all(now - then >= messages for now, then in zip(received(), counts, strict=True)),
        30,
        what="every other master to receive the messages",
    )
    return sum(cpu_seconds(pid) - cpu for pid, cpu in zip(pids, before, strict=True)) / len(pids) / messages * 1e6


def cluster_shards(cluster: LocalCluster) -> list[Shard]:
    """The masters with the models whose ledgers they hold; fails unless each holds as many."""
    by_port: dict[int, list[str]] = {m.port: [] for m in cluster.masters}
    for model in MODELS:
        by_port[cluster.master_of("{" + cluster_prefix(PREFIX, model) + "}").port].append(model)
    spread = sorted(len(models) for models in by_port.values())
    if spread != [len(MODELS) // len(by_port)] * len(by_port):
        raise SystemExit(f"the models' hash tags do not spread evenly over the masters: {by_port}; rename MODELS")
    shards = []
    for n, master in enumerate(cluster.masters):
        assert master.proc is not None
        shards.append(Shard(f"master-{n + 1}", master.proc.pid, master.client(), by_port[master.port], master))
    return shards


def start_instances(
    stack: contextlib.ExitStack, work: Path, name: str, url: str, extra: list[str], n: int
) -> list[str]:
    config = work / "cluster-bench.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    args = ["--port", "0", "--config", str(config), "--redis-url", url, "--key-prefix", PREFIX, *extra]
    return [
        f"{HOST}:{stack.enter_context(running('rlservice', args, work / f'{name}-{i}.log', BOOT_TIMEOUT_S))}"
        for i in range(n)
    ]


def report(args: argparse.Namespace, bus_us: float, one: SetUp, single: SetUp, cluster: SetUp, busy: SetUp) -> int:
    setups = (one, single, cluster, busy)
    print(
        f"{args.pairs} Acquire + Release pairs per set-up at concurrency {args.concurrency}, spread evenly over "
        f"{len(MODELS)} models and {args.instances} instance(s), in {args.rounds} alternating rounds"
    )
    header = (
        "set-up",
        "redis",
        "models",
        "RPCs",
        "share",
        "RPC/s",
        "CPU s",
        "µs/RPC",
        "RPC/call",
        "bus/RPC",
        "wake/RPC",
    )
    print(
        "{:<8} {:<9} {:<16} {:>7} {:>6} {:>6} {:>6} {:>7} {:>8} {:>7} {:>8} {:>6} {:>8}".format(
            *header, "idle", "ceiling"
        )
    )
    for setup in setups:
        for s in setup.shards:
            rpcs = setup.shard_rpcs(s)
            models = ",".join(s.models) if len(s.models) < len(MODELS) else f"all {len(MODELS)}"
            print(
                f"{setup.name:<8} {s.name:<9} {models:<16} {rpcs:>7} {rpcs / setup.total_rpcs:>6.1%}"
                f" {rpcs / setup.seconds:>6.0f} {s.cpu:>6.2f} {s.cpu / rpcs * 1e6:>7.1f}"
                f" {rpcs / max(1, s.scripts):>8.2f} {s.bus_publishes / rpcs:>7.2f} {s.wakeups / rpcs:>8.2f}"
                f" {s.idle_share:>6.1%}"
                f" {rpcs / s.cpu:>8,.0f}"
            )
    print(
        "one: one Redis, no cluster flag (one ledger for every model); cluster1, cluster3: a Redis Cluster of 1 and"
        f" {MASTERS} masters\n(a ledger per model). µs/RPC: the Redis's CPU over the measured rounds per RPC it"
        " served; RPC/call: RPCs per EVALSHA;\nbus/RPC: PUBLISH messages other masters forwarded to it over the"
        " cluster bus; wake/RPC: times its event loop slept and woke\n(voluntary context switches); idle: its CPU"
        " with no load (heartbeats, cluster bus, cron); ceiling: the RPC/s of its\nload mix at 100 % of a core."
        f" {busy.name}: {cluster.name}'s instances with the whole load on {busy.shards[0].name}'s models, as busy as"
        " one Redis"
    )
    print()
    for setup in setups:
        busiest = max(setup.shards, key=lambda s: s.cpu)
        print(
            f"ceiling, {setup.name}: {setup.total_rpcs} RPCs / {busiest.cpu:.2f} CPU s of {busiest.name}"
            f" = {setup.ceiling:,.0f} RPC/s ({setup.ceiling / 2:,.0f} jobs/s)"
        )
    forwarded = sum(s.bus_publishes for s in cluster.shards) / cluster.total_rpcs
    print(
        f"cluster bus: a PUBLISH another master forwards ({args.event_bytes} bytes) costs a master {bus_us:.1f} µs;"
        f" at {forwarded:.2f} a RPC, {forwarded * bus_us:.1f} µs of {cluster.name}'s CPU per RPC"
    )
    ratio = cluster.ceiling / one.ceiling
    verdict = "meets" if ratio >= TARGET_RATIO else "is below"
    print(f"{cluster.name} / one: {ratio:.2f}x ({verdict} the {TARGET_RATIO}x target)")
    print(
        f"{cluster.name} / {single.name}: {cluster.ceiling / single.ceiling:.2f}x"
        f" (the same ledgers, one per model, on 1 and {MASTERS} shards)"
    )
    projected = MASTERS * busy.ceiling
    print(
        f"{MASTERS} masters each as busy as {busy.shards[0].name} in {busy.name}: {projected:,.0f} RPC/s,"
        f" {projected / one.ceiling:.2f}x one (a projection: every Redis equally busy, not the target's measure)"
    )
    print(
        "computed from Redis CPU per RPC: this 2-core machine runs the load, the instances and every Redis,"
        " so the measured RPC/s is the machine's, not the Redis's"
    )
    per_rpc = sum(s.cpu for s in cluster.shards) / cluster.total_rpcs
    jobs = 1 / (2 * per_rpc)
    planned = jobs * PLANNED_SHARE
    print(
        f"\nsizing: {per_rpc * 1e6:.1f} µs of a master's CPU per RPC ({cluster.name}, all masters), a job ="
        f" Acquire + Release -> {jobs:,.0f} jobs/s per shard at 100 % of a core; planned at {PLANNED_SHARE:.0%}:"
        f" {planned:,.0f}"
    )
    for target in TARGET_JOBS:
        print(f"  {target:>7,} jobs/s: {math.ceil(target / planned)} shards (models spread evenly over them)")
    print(f"one model's ledger stays on one shard: a single model is bounded by {jobs:,.0f} jobs/s however many shards")
    return 1 if any(s.errors for s in setups) else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=24_000, help="measured pairs per set-up (default 24000)")
    p.add_argument("--concurrency", type=int, default=48, help="pairs in flight in all (default 48)")
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds the pairs are split into (default 4)")
    # With one instance nothing is published: no other instance to tell.
    p.add_argument("--instances", type=int, default=2, help="instances per set-up (default 2)")
    p.add_argument("--warmup", type=int, default=1_200, help="unmeasured pairs per set-up first (default 1200)")
    p.add_argument(
        "--event-bytes", type=int, default=EVENT_BYTES, help=f"PUBLISH size for the bus cost (default {EVENT_BYTES})"
    )
    p.add_argument("--idle-seconds", type=float, default=5.0, help="no-load window for idle CPU (default 5)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        one_redis = RedisServer(work / "one")
        (work / "one").mkdir()
        one_redis.start()
        stack.callback(one_redis.stop)
        assert one_redis.proc is not None
        setups = [
            SetUp(
                "one",
                start_instances(stack, work, "one", one_redis.url, [], args.instances),
                [Shard("redis", one_redis.proc.pid, one_redis.client(), list(MODELS))],
            )
        ]
        clusters = [LocalCluster(work / f"cluster-{masters}", masters=masters) for masters in (1, MASTERS)]
        for cluster in clusters:
            masters = len(cluster.masters)
            cluster.start()
            stack.callback(cluster.stop)
            name = f"cluster{masters}"
            addresses = start_instances(stack, work, name, cluster.url, ["--redis-cluster"], args.instances)
            setups.append(SetUp(name, addresses, cluster_shards(cluster)))
        # The same cluster with one master carrying the whole load: what a master costs per RPC when it
        # is as busy as the one Redis, as every master would be at three times the load.
        first = cluster_shards(clusters[-1])[0]
        setups.append(SetUp(f"c{MASTERS}-busy", setups[-1].addresses, [first], tuple(first.models)))
        for setup in setups:
            uvloop.run(_load(setup, args.warmup, args.concurrency, time.perf_counter() + 120, f"warm-{setup.name}"))
        measure_idle(setups, args.idle_seconds)
        for n in range(args.rounds):
            for setup in setups if n % 2 == 0 else setups[::-1]:
                measured_round(setup, args, f"r{n}-{setup.name}")
        bus_us = bus_cost_us(clusters[-1], args.event_bytes)
    return report(args, bus_us, *setups)


if __name__ == "__main__":
    sys.exit(main())
