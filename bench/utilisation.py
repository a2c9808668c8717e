"""Utilisation and fairness of the capacity model with real instances, beside the seed's model.

One model of TPM 100 000 and one job type of 10 000 tokens: a minute window holds 10 jobs. A job
holds its lease a short time, then releases it with actual = estimate; a job that cannot start
waits up to its max_wait_ms, so once nothing more fits in the window the waiters give up and the
run ends. For N instances, lending off and on, each run on fresh state (its own key prefix and
its own instances) and inside one minute window on Redis time:
- (a) all demand on one instance: the share of the window granted;
- (b) the same demand on every instance at once: jobs granted per instance against the fair share
  (the window's jobs / N), as min / max.
The committed usage (settled + open) of the window is read from the ledger during and after each
run, and the granted tokens are counted by the client: neither may exceed the limit.

The seed's model is a discrete-event simulation of the seed's formula (share check only, no global
cap, no lending) with the same jobs, hold time, waits and N.

    python bench/utilisation.py [--ns 1,2,4,8] [--jobs 20] [--hold-ms 150] [--max-wait-ms 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import uvloop
import yaml
from redis.asyncio import Redis

from rllocal.processes import RedisServer, spawn_module, stop_processes
from rlproto import ratelimit_pb2 as pb
from rlproto import ratelimit_pb2_grpc as pb_grpc

MODEL = "bench-model"
JOB_TYPE = "job"
LIMIT = 100_000
ESTIMATE = 10_000
WINDOW_JOBS = LIMIT // ESTIMATE
BOOT_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
# Give-up answers of a job that found no capacity within its wait.
NOT_GRANTED = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED)
# A lease expires this long after its grant, so the grant's time on Redis's clock is known.
LEASE_TTL_MS = 60_000


def config(lending: bool, max_wait_ms: int) -> dict[str, Any]:
    return {
        "lend_idle_capacity": lending,
        "lease_ttl_ms": LEASE_TTL_MS,
        "models": {MODEL: {"tokens_per_minute": LIMIT}},
        "job_types": {
            JOB_TYPE: {
                "estimated_tokens": ESTIMATE,
                "estimated_requests": 1,
                "ratio": {"initial": 1.0},
                "max_wait_ms": {MODEL: max_wait_ms},
            }
        },
    }


# ----- the seed's model --------------------------------------------------------------------------


@dataclass
class Outcome:
    """Jobs granted per instance and the most the window ever had committed (settled + open)."""

    granted: list[int]
    max_committed: int

    @property
    def total(self) -> int:
        return sum(self.granted)


def seed_model(demand: list[int], hold_ms: int, max_wait_ms: int) -> Outcome:
    """The seed's admission, event by event: instance i starts a job when its own open estimates
    plus the job fit floor((limit - settled) / N); nothing checks the global cap. Waiters are FIFO
    per instance and retried, the releasing instance first, after every release."""
    n = len(demand)
    settled = 0
    open_ = [0] * n
    granted = [0] * n
    queues: list[deque[int]] = [deque() for _ in range(n)]
    events: list[tuple[int, int, str, int, int]] = []
    order = 0
    max_committed = 0

    def push(at: int, kind: str, inst: int, job: int) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (at, order, kind, inst, job))

    def fits(inst: int) -> bool:
        return open_[inst] + ESTIMATE <= (LIMIT - settled) // n

    def start(inst: int, job: int, now: int) -> None:
        nonlocal max_committed
        open_[inst] += ESTIMATE
        granted[inst] += 1
        max_committed = max(max_committed, settled + sum(open_))
        push(now + hold_ms, "release", inst, job)

    def wake(inst: int, now: int) -> None:
        while queues[inst] and fits(inst):
            start(inst, queues[inst].popleft(), now)

    job = 0
    for k in range(max(demand)):
        for inst in range(n):
            if k < demand[inst]:
                push(0, "arrive", inst, job)
                job += 1
    while events:
        now, _, kind, inst, job = heapq.heappop(events)
        if kind == "arrive":
            if not queues[inst] and fits(inst):
                start(inst, job, now)
            else:
                queues[inst].append(job)
                push(now + max_wait_ms, "give_up", inst, job)
        elif kind == "give_up":
            if job in queues[inst]:
                queues[inst].remove(job)
        else:
            open_[inst] -= ESTIMATE
            settled += ESTIMATE
            for other in [inst, *(i for i in range(n) if i != inst)]:
                wake(other, now)
    return Outcome(granted, max_committed)


# ----- real instances ----------------------------------------------------------------------------


@dataclass
class Instance:
    proc: subprocess.Popen[str]
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def boot(n: int, redis_url: str, prefix: str, config_file: Path, logs: Path) -> list[Instance]:
    """N instances started in parallel, all bound to one key prefix."""

    def one(i: int) -> Instance:
        args = ["--port", "0", "--config", str(config_file), "--redis-url", redis_url, "--key-prefix", prefix]
        log = logs / f"{prefix}-{i}.log"
        proc, port = spawn_module("rlservice", args, log, BOOT_TIMEOUT_S, env={"RL_LOG_LEVEL": "WARNING"})
        return Instance(proc, port)

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        started, failures = [], []
        for f in futures:
            try:
                started.append(f.result())
            except RuntimeError as e:
                failures.append(e)
    if failures:
        stop(started)
        raise failures[0]
    return started


def stop(instances: list[Instance]) -> None:
    stop_processes((inst.proc for inst in instances), STOP_TIMEOUT_S)


async def eventually(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Measured:
    granted: list[int]
    # Grants that never queued: with every instance loaded, more than an instance's share of
    # these means it borrowed before the others' waiters were known.
    without_wait: list[int]
    # From the first instance's first grant to the last one's, on Redis's clock: with jobs sent at
    # once this should stay well below the hold time.
    first_grants_ms: int
    max_committed: int
    final_settled: int
    final_open: int
    refused: int
    errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.granted)

    @property
    def granted_tokens(self) -> int:
        return self.total * ESTIMATE


class Run:
    """One run: jobs sent at once to some of N fresh instances, the ledger watched meanwhile."""

    def __init__(
        self, redis: Redis, prefix: str, stubs: list[pb_grpc.RateLimiterAsyncStub], args: argparse.Namespace
    ) -> None:
        self.redis, self.prefix, self.stubs, self.args = redis, prefix, stubs, args
        self.granted = [0] * len(stubs)
        self.without_wait = [0] * len(stubs)
        self.first_grant_ms: list[int | None] = [None] * len(stubs)
        self.refused = 0
        self.errors: list[str] = []

    async def window(self) -> tuple[int, float]:
        """The minute window on Redis time and the seconds left in it."""
        secs, micros = await self.redis.time()
        now = secs + micros / 1e6
        return int(now // 60), 60 - now % 60

    def window_key(self, window: int) -> str:
        return f"{{{self.prefix}}}:w:{MODEL}:m:{window}"

    async def live(self) -> int:
        return int(await self.redis.zcard(f"{{{self.prefix}}}:instances"))

    async def committed(self, window: int) -> tuple[int, int]:
        settled, open_ = await self.redis.hmget(self.window_key(window), ["st", "ot"])
        return int(settled or 0), int(open_ or 0)

    async def job(self, inst: int, n: int) -> None:
        stub = self.stubs[inst]
        request = pb.AcquireRequest(job_id=f"{self.prefix}-{inst}-{n}", job_type=JOB_TYPE)
        try:
            grant = await stub.Acquire(request, timeout=self.args.max_wait_ms / 1000 + 20)
        except grpc.aio.AioRpcError as e:
            if e.code() in NOT_GRANTED:
                self.refused += 1
            else:
                self.errors.append(f"Acquire on instance {inst}: {e.code().name} {e.details()}")
            return
        self.granted[inst] += 1
        if grant.waited_ms == 0:
            self.without_wait[inst] += 1
        granted_at = grant.lease_expires_at_ms - LEASE_TTL_MS
        first = self.first_grant_ms[inst]
        self.first_grant_ms[inst] = granted_at if first is None else min(first, granted_at)
        await asyncio.sleep(self.args.hold_ms / 1000)
        usage = pb.Usage(request_count=1, input_tokens=ESTIMATE)
        release = pb.ReleaseRequest(lease_id=grant.lease_id, outcome=pb.SUCCESS, actual=usage)
        try:
            await stub.Release(release, timeout=20)
        except grpc.aio.AioRpcError as e:
            self.errors.append(f"Release on instance {inst}: {e.code().name} {e.details()}")

    async def execute(self, demand: list[int]) -> Measured:
        needed = self.args.max_wait_ms / 1000 + 15
        window, left = await self.window()
        if left < needed:
            await asyncio.sleep(left + 0.05)
            window, left = await self.window()
        highest = 0
        n = len(self.stubs)
        fewest = await self.live()
        done = asyncio.Event()

        async def watch() -> None:
            nonlocal highest, fewest
            while not done.is_set():
                settled, open_ = await self.committed(window)
                highest = max(highest, settled + open_)
                fewest = min(fewest, await self.live())
                await asyncio.sleep(0.005)

        watcher = asyncio.ensure_future(watch())
        # Interleaved, so that no instance's jobs all go out before another's.
        jobs = [self.job(i, k) for k in range(max(demand)) for i in range(n) if k < demand[i]]
        try:
            await asyncio.wait_for(asyncio.gather(*jobs), self.args.max_wait_ms / 1000 + 60)
        finally:
            done.set()
            await watcher
        settled, open_ = await self.committed(window)
        end, _ = await self.window()
        if end != window:
            self.errors.append(f"the run crossed a minute window ({window} -> {end})")
        if fewest != n:
            self.errors.append(f"the ledger counted {fewest} live instances at one point, not {n}")
        firsts = [t for t in self.first_grant_ms if t is not None]
        spread = max(firsts) - min(firsts) if firsts else 0
        return Measured(
            self.granted,
            self.without_wait,
            spread,
            max(highest, settled + open_),
            settled,
            open_,
            self.refused,
            self.errors,
        )


async def measure(
    redis_url: str, prefix: str, instances: list[Instance], demand: list[int], args: argparse.Namespace
) -> Measured:
    n = len(instances)
    channels = [grpc.aio.insecure_channel(i.address) for i in instances]
    redis = Redis.from_url(redis_url)
    try:
        stubs: list[pb_grpc.RateLimiterAsyncStub] = [pb_grpc.RateLimiterStub(c) for c in channels]

        async def all_see_n() -> bool:
            for stub in stubs:
                try:
                    alloc = await stub.GetAllocation(pb.GetAllocationRequest(), timeout=5)
                except grpc.aio.AioRpcError:
                    return False
                pool = alloc.allocation.pools.get(MODEL)
                if pool is None or pool.tokens_per_minute != LIMIT // n:
                    return False
            return True

        await eventually(all_see_n, BOOT_TIMEOUT_S, f"{n} instances to report a pool of {LIMIT // n} TPM")
        return await Run(redis, prefix, stubs, args).execute(demand)
    finally:
        for c in channels:
            await c.close(None)
        await redis.aclose()


def run(redis_url: str, logs: Path, n: int, lending: bool, scenario: str, args: argparse.Namespace) -> Measured:
    prefix = f"u{n}{'l' if lending else 's'}{scenario}-{os.urandom(3).hex()}"
    config_file = logs / f"{prefix}.yaml"
    config_file.write_text(yaml.safe_dump(config(lending, args.max_wait_ms)))
    demand = [args.jobs] + [0] * (n - 1) if scenario == "a" else [args.jobs] * n
    instances = boot(n, redis_url, prefix, config_file, logs)
    try:
        return uvloop.run(measure(redis_url, prefix, instances, demand, args))
    finally:
        stop(instances)


# ----- report ------------------------------------------------------------------------------------


@dataclass
class Row:
    n: int
    lending: bool
    a: Measured
    b: Measured
    seed_a: Outcome
    seed_b: Outcome

    @property
    def fair(self) -> float:
        return WINDOW_JOBS / self.n


def failures(row: Row) -> list[str]:
    """The targets this row misses, each said in one line."""
    out: list[str] = []
    mode = "lending" if row.lending else "no lending"
    where = f"N={row.n}, {mode}"
    if row.lending and row.a.total < WINDOW_JOBS - 1:
        out.append(f"{where}: (a) granted {row.a.total} of {WINDOW_JOBS} jobs, below all but one")
    if not row.lending and row.a.total < row.seed_a.total:
        out.append(f"{where}: (a) granted {row.a.total} jobs, below the seed's model ({row.seed_a.total})")
    off = [g for g in row.b.granted if abs(g - row.fair) > 1]
    if off:
        out.append(f"{where}: (b) instances granted {off} jobs, more than one job from the fair {row.fair:.2f}")
    for scenario, m in (("a", row.a), ("b", row.b)):
        if m.max_committed > LIMIT:
            out.append(f"{where}: ({scenario}) the ledger committed {m.max_committed} above the limit {LIMIT}")
        if m.granted_tokens > LIMIT:
            out.append(f"{where}: ({scenario}) clients were granted {m.granted_tokens} tokens above {LIMIT}")
        if m.final_open or m.final_settled != m.granted_tokens:
            out.append(
                f"{where}: ({scenario}) the ledger ends with settled {m.final_settled} and open {m.final_open}, "
                f"the clients with {m.granted_tokens} granted and released"
            )
        out += [f"{where}: ({scenario}) {e} (x{count})" for e, count in Counter(m.errors).items()]
    return out


def spread(granted: list[int]) -> str:
    return f"{min(granted)} / {max(granted)}"


def table(rows: list[Row]) -> str:
    headers = [
        "N",
        "lending",
        "(a) granted",
        "seed (a)",
        "(b) min / max",
        "fair",
        "seed (b) min / max",
        "max committed (a) / (b)",
        "seed max committed (b)",
    ]
    cells = [
        [
            str(r.n),
            "on" if r.lending else "off",
            f"{r.a.total}/{WINDOW_JOBS} = {r.a.total / WINDOW_JOBS:.0%}",
            f"{r.seed_a.total}/{WINDOW_JOBS} = {r.seed_a.total / WINDOW_JOBS:.0%}",
            spread(r.b.granted),
            f"{r.fair:.2f}",
            spread(r.seed_b.granted),
            f"{r.a.max_committed:,} / {r.b.max_committed:,}",
            f"{r.seed_b.max_committed:,}",
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) for v, w in zip(values, widths, strict=True))

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(c) for c in cells)])


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ns", default="1,2,4,8", help="instance counts, comma-separated (default 1,2,4,8)")
    p.add_argument("--jobs", type=int, default=20, help="jobs sent at once to each loaded instance (default 20)")
    p.add_argument("--hold-ms", type=int, default=150, help="how long a job holds its lease (default 150)")
    p.add_argument("--max-wait-ms", type=int, default=4_000, help="how long a job may wait (default 4000)")
    p.add_argument("--logs", type=Path, help="keep the instances' logs and configurations in this folder")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    ns = [int(x) for x in args.ns.split(",")]
    rows: list[Row] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rl-util-") as tmp:
        work = Path(tmp)
        logs = args.logs or work
        logs.mkdir(parents=True, exist_ok=True)
        redis_server = RedisServer(work)
        redis_server.start()
        try:
            for n in ns:
                seed_a = seed_model([args.jobs] + [0] * (n - 1), args.hold_ms, args.max_wait_ms)
                seed_b = seed_model([args.jobs] * n, args.hold_ms, args.max_wait_ms)
                for lending in (False, True):
                    a = run(redis_server.url, logs, n, lending, "a", args)
                    b = run(redis_server.url, logs, n, lending, "b", args)
                    rows.append(Row(n, lending, a, b, seed_a, seed_b))
                    print(
                        f"N={n} lending {'on' if lending else 'off'}: (a) granted {a.granted}; (b) granted "
                        f"{b.granted}, of which without waiting {b.without_wait}; first grants within "
                        f"{b.first_grants_ms} ms",
                        flush=True,
                    )
        finally:
            redis_server.stop()
    print(
        f"\nTPM {LIMIT:,}, jobs of {ESTIMATE:,} tokens ({WINDOW_JOBS} per window), {args.jobs} jobs at once per "
        f"loaded instance, held {args.hold_ms} ms, released with actual = estimate, max wait {args.max_wait_ms} ms; "
        f"{time.monotonic() - started:.0f} s in all"
    )
    print(table(rows))
    missed = [f for r in rows for f in failures(r)]
    if missed:
        print("\nTargets missed:")
        print("\n".join(f"  {m}" for m in missed))
        return 1
    print("\nEvery target met.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
