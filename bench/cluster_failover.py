"""What a failover of a Redis Cluster master loses: grants the instances acknowledged that the promoted
replica's ledger does not hold, and what bounds it.

Each run starts a cluster of three masters with a replica each, two instances on it (--redis-cluster)
and a load of Acquires (hour-long leases, never released, so that every acknowledged grant must have a
lease record in the ledger). Midway the master serving the model's slot is SIGKILLed. Once its replica
is promoted and the load is granted again, every acknowledged lease id is looked up in the ledger:
one that is missing is a grant lost by asynchronous replication (its capacity can be granted again).

Scenarios, each run --runs times:
- `in sync`: the replica keeps up (loopback), the master is killed under load;
- `replica cut off`: the replica is stopped (SIGSTOP) and its link closed by the master, which goes
  on granting alone for --cut-off-s, as with the link between them down; then the master is killed
  and the replica resumed;
- `replica cut off, min-replicas-to-write 1`: the same with `min-replicas-to-write 1` and
  `min-replicas-max-lag 1` on every node, so that a master refuses writes while no replica is
  connected that acknowledged its stream within the last second.

Once the replica is promoted, the killed master is started again (it rejoins as the new master's
replica): with min-replicas-to-write 1 and one replica a master, the shard writes again only then.

Then what `WAIT 1 <timeout>` after each script call would cost: a small write script, alone and
followed by WAIT in the same round trip, on a master with a replica, one caller and --wait-callers
callers at once, in alternating rounds.

    python bench/cluster_failover.py [--runs 3] [--clients 32] [--cut-off-s 4] [--node-timeout-ms 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import uvloop
import yaml
from redis.asyncio import Redis

from rllocal.ledger_view import Ledger
from rllocal.processes import poll_until, spawn_module, stop_processes, wait_serving
from rllocal.redis_cluster import ClusterNode, LocalCluster, NodeSettings
from rlproto import ratelimit_pb2 as pb
from rlproto import ratelimit_pb2_grpc as pb_grpc

HOST = "127.0.0.1"
MODEL = "failover-model"
JOB = "small"
BOOT_TIMEOUT_S = 30.0
CALL_DEADLINE_S = 2.0
WARM_S = 1.5
# After the first grant past the promotion: the load goes on a moment, so that grants made then
# are checked too.
AFTER_S = 1.0
PROMOTION_TIMEOUT_S = 60.0
# Never runs out, and leases outlive the run: every acknowledged grant keeps its record.
CONFIG: dict[str, Any] = {
    "models": {MODEL: {"tokens_per_minute": 10**10, "requests_per_minute": 10**8}},
    "job_types": {JOB: {"estimated_tokens": 100}},
    "lease_ttl_ms": 3_600_000,
}
# A write as small as a grant's smallest: the WAIT measurement is about the round trip WAIT adds.
WRITE_SCRIPT = "return redis.call('INCR', KEYS[1])"
WAIT_TIMEOUT_MS = 1000
WAIT_ROUNDS = 5


@dataclass(frozen=True)
class Scenario:
    name: str
    cut_off: bool
    min_replicas_to_write: int


SCENARIOS = (
    Scenario("in sync", cut_off=False, min_replicas_to_write=0),
    Scenario("replica cut off", cut_off=True, min_replicas_to_write=0),
    Scenario("replica cut off, min-replicas-to-write 1", cut_off=True, min_replicas_to_write=1),
)


@dataclass
class Load:
    """Every grant acknowledged (lease id, when, on the run's clock) and every refusal's code."""

    acked: list[tuple[str, float]] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    refused_before_kill: Counter[str] = field(default_factory=Counter)
    killed_at: float = 0.0

    def first_ack_after(self, t: float) -> float | None:
        return next((at for _, at in self.acked if at > t), None)


@dataclass
class Outcome:
    scenario: str
    acked_by_old_master: int
    acked_while_cut_off: int
    lost: int
    lost_span_ms: float
    refused_before_kill: Counter[str]
    granted_again_after_s: float
    acked_after: int
    lost_after: int


async def client(stub: pb_grpc.RateLimiterAsyncStub, load: Load, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        request = pb.AcquireRequest(job_id=os.urandom(8).hex(), job_type=JOB, models=[MODEL])
        try:
            grant = await stub.Acquire(request, timeout=CALL_DEADLINE_S)
        except grpc.aio.AioRpcError as e:
            load.refused[e.code().name] += 1
            if not load.killed_at:
                load.refused_before_kill[e.code().name] += 1
            await asyncio.sleep(0.02)
            continue
        load.acked.append((grant.lease_id, loop.time()))


def boot_instances(
    cluster: LocalCluster, config: Path, work: Path, count: int
) -> list[tuple[subprocess.Popen[str], int]]:
    out = []
    args = ["--port", "0", "--config", str(config), "--redis-url", cluster.url, "--redis-cluster"]
    for i in range(count):
        out.append(
            spawn_module("rlservice", args, work / f"rlservice-{i}.log", BOOT_TIMEOUT_S, {"RL_LOG_LEVEL": "WARNING"})
        )
    for _, port in out:
        wait_serving(f"{HOST}:{port}", BOOT_TIMEOUT_S)
    return out


def missing(cluster: LocalCluster, lease_ids: list[str]) -> set[str]:
    """The lease ids the model's ledger holds no record of (read from its master now)."""
    client = cluster.client()
    ledger = Ledger(client, cluster=True)
    try:
        master = cluster.master_of(ledger.key(MODEL)).client()
        gone: set[str] = set()
        for start in range(0, len(lease_ids), 1000):
            chunk = lease_ids[start : start + 1000]
            pipe = master.pipeline(transaction=False)
            for lease_id in chunk:
                pipe.exists(ledger.key(MODEL, "lease", lease_id))
            gone.update(lease_id for lease_id, found in zip(chunk, pipe.execute(), strict=True) if not found)
        return gone
    finally:
        client.close()


async def one_run(args: argparse.Namespace, scenario: Scenario, work: Path) -> Outcome:
    settings = NodeSettings(
        node_timeout_ms=args.node_timeout_ms,
        min_replicas_to_write=scenario.min_replicas_to_write,
        min_replicas_max_lag_s=1,
    )
    cluster = LocalCluster(work / "cluster", replicas=True, settings=settings)
    await asyncio.to_thread(cluster.start)
    config = work / "failover.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    instances: list[tuple[subprocess.Popen[str], int]] = []
    try:
        instances = await asyncio.to_thread(boot_instances, cluster, config, work, args.instances)
        master = cluster.master_of("{rl:" + MODEL + "}")
        replica = cluster.replica_of(master)
        load, stop = Load(), asyncio.Event()
        loop = asyncio.get_running_loop()
        channels = [grpc.aio.insecure_channel(f"{HOST}:{port}") for _, port in instances]
        stubs = [pb_grpc.RateLimiterStub(c) for c in channels]
        tasks = [asyncio.create_task(client(stubs[i % len(stubs)], load, stop)) for i in range(args.clients)]
        try:
            await asyncio.sleep(WARM_S)
            cut_at = loop.time()
            if scenario.cut_off:
                await asyncio.to_thread(cut_off, master, replica)
                await asyncio.sleep(args.cut_off_s)
            master.stop()
            load.killed_at = loop.time()
            replica.resume()
            await asyncio.to_thread(
                poll_until, lambda: replica.role() == "master", PROMOTION_TIMEOUT_S, 0.05, "the replica to be promoted"
            )
            promoted_at = loop.time()
            await asyncio.to_thread(master.restart)
            granted_again = await wait_for_grant(load, loop.time())
            await asyncio.sleep(AFTER_S)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            for channel in channels:
                await channel.close(None)
        # Answers on their way when the master died arrive just after the kill: the old master's still.
        before = [(lease, at) for lease, at in load.acked if at < promoted_at]
        after = [lease for lease, at in load.acked if at >= promoted_at]
        gone = await asyncio.to_thread(missing, cluster, [lease for lease, _ in load.acked])
        lost_times = [at for lease, at in before if lease in gone]
        return Outcome(
            scenario=scenario.name,
            acked_by_old_master=len(before),
            acked_while_cut_off=sum(1 for _, at in before if at >= cut_at),
            lost=len(lost_times),
            lost_span_ms=(max(lost_times) - min(lost_times)) * 1000 if lost_times else 0.0,
            refused_before_kill=load.refused_before_kill,
            granted_again_after_s=granted_again - load.killed_at,
            acked_after=len(after),
            lost_after=sum(1 for lease in after if lease in gone),
        )
    finally:
        await asyncio.to_thread(stop_processes, [proc for proc, _ in instances])
        cluster.stop()


def cut_off(master: ClusterNode, replica: ClusterNode) -> None:
    """The replica stopped and its link closed by the master: the master goes on alone, as with the
    link between them down, and what it writes from now on reaches only its backlog."""
    replica.pause()
    master.client().client_kill_filter(_type="replica")


async def wait_for_grant(load: Load, since: float) -> float:
    """When the load was first granted after `since`."""
    deadline = time.monotonic() + PROMOTION_TIMEOUT_S
    while (found := load.first_ack_after(since)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no grant within {PROMOTION_TIMEOUT_S}s of the kill: refusals {dict(load.refused)}")
        await asyncio.sleep(0.05)
    return found


@dataclass(frozen=True)
class WaitCost:
    callers: int
    plain_us: float
    waited_us: float
    plain_per_s: float
    waited_per_s: float
    # WAITs that returned at their timeout with no replica's acknowledgement
    timed_out: int


async def wait_cost(master: ClusterNode, key: str, calls: int, callers: int) -> WaitCost:
    """Median time per script call and calls per second, alone and with WAIT 1 in the same round trip,
    in rounds taken in turn (so that whatever else loads the machine weighs on both alike)."""
    redis = Redis(host=HOST, port=master.port)
    try:
        sha = await redis.script_load(WRITE_SCRIPT)

        timed_out = 0

        async def timed(with_wait: bool, latencies: list[float]) -> float:
            async def caller() -> None:
                nonlocal timed_out
                for _ in range(calls // callers):
                    pipe = redis.pipeline(transaction=False)
                    pipe.evalsha(sha, 1, key)
                    if with_wait:
                        pipe.execute_command("WAIT", 1, WAIT_TIMEOUT_MS)
                    started = time.perf_counter()
                    replies = await pipe.execute()
                    latencies.append(time.perf_counter() - started)
                    if with_wait and replies[1] < 1:
                        timed_out += 1

            started = time.perf_counter()
            await asyncio.gather(*(caller() for _ in range(callers)))
            return (calls // callers) * callers / (time.perf_counter() - started)

        await timed(False, [])
        plain: list[float] = []
        waited: list[float] = []
        plain_rates, waited_rates = [], []
        for _ in range(WAIT_ROUNDS):
            plain_rates.append(await timed(False, plain))
            waited_rates.append(await timed(True, waited))
        return WaitCost(
            callers,
            statistics.median(plain) * 1e6,
            statistics.median(waited) * 1e6,
            statistics.median(plain_rates),
            statistics.median(waited_rates),
            timed_out,
        )
    finally:
        await redis.aclose()


async def measure_wait(args: argparse.Namespace, work: Path) -> list[WaitCost]:
    cluster = LocalCluster(work / "wait-cluster", replicas=True)
    await asyncio.to_thread(cluster.start)
    try:
        key = "{rl:" + MODEL + "}:wait-bench"
        master = cluster.master_of(key)
        return [await wait_cost(master, key, args.wait_calls, callers) for callers in (1, args.wait_callers)]
    finally:
        cluster.stop()


async def main_async(args: argparse.Namespace, work: Path) -> tuple[list[Outcome], list[WaitCost]]:
    outcomes = []
    for scenario in SCENARIOS:
        for run in range(args.runs):
            outcome = await one_run(args, scenario, work / f"{scenario.name.replace(' ', '-')}-{run}")
            print(
                f"{outcome.scenario} #{run + 1}: lost {outcome.lost} of {outcome.acked_by_old_master}", file=sys.stderr
            )
            outcomes.append(outcome)
    return outcomes, await measure_wait(args, work)


def report(args: argparse.Namespace, outcomes: list[Outcome], costs: list[WaitCost]) -> int:
    print(f"# cluster failover: {args.runs} runs a scenario, {args.clients} clients on {args.instances} instances")
    print(
        f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; "
        f"cluster-node-timeout {args.node_timeout_ms} ms, replica cut off {args.cut_off_s} s where it is"
    )
    print(
        "\n| scenario | grants acknowledged by the old master | of them while cut off | lost | lost grants span (ms)"
        " | refused before the kill | granted again after (s) | grants after, lost |"
    )
    print("|---|---|---|---|---|---|---|---|")
    failures = []
    for o in outcomes:
        cut = str(o.acked_while_cut_off) if "cut off" in o.scenario else "-"
        refused = " ".join(f"{n} {code}" for code, n in o.refused_before_kill.items()) or "0"
        print(
            f"| {o.scenario} | {o.acked_by_old_master} | {cut} | {o.lost} | {o.lost_span_ms:.0f} | {refused} |"
            f" {o.granted_again_after_s:.1f} | {o.acked_after}, {o.lost_after} |"
        )
        if o.lost_after:
            failures.append(f"{o.scenario}: {o.lost_after} grants made after the promotion are missing")
    print(
        f"\n| callers | script call alone (µs, p50) | with WAIT 1 {WAIT_TIMEOUT_MS} (µs, p50) | calls/s alone"
        " | calls/s with WAIT | WAITs timed out |"
    )
    print("|---|---|---|---|---|---|")
    for c in costs:
        print(
            f"| {c.callers} | {c.plain_us:.0f} | {c.waited_us:.0f} | {c.plain_per_s:.0f} | {c.waited_per_s:.0f}"
            f" | {c.timed_out} of {WAIT_ROUNDS * (args.wait_calls // c.callers) * c.callers} |"
        )
    for failure in failures:
        print(f"FAIL {failure}")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs of each scenario (0: the WAIT measurement only)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent Acquire loops")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--cut-off-s", type=float, default=4.0, help="how long the master grants alone before the kill")
    parser.add_argument("--node-timeout-ms", type=int, default=3000, help="cluster-node-timeout")
    parser.add_argument("--wait-calls", type=int, default=2000, help="script calls per round of the WAIT measurement")
    parser.add_argument("--wait-callers", type=int, default=16, help="concurrent callers in the second one")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="failover-"))
    outcomes, costs = uvloop.run(main_async(args, work))
    code = report(args, outcomes, costs)
    if code == 0:
        shutil.rmtree(work)
    else:
        print(f"logs: {work}")
    return code


if __name__ == "__main__":
    sys.exit(main())
