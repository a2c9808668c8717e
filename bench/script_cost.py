"""What the ledger script costs Redis, counted in instructions under callgrind.

Wall-clock Redis CPU moves with whatever else shares the machine; instruction counts do not: the same
redis-server, script and calls give the same count on a quiet or a loaded machine. This runs a
redis-server under `valgrind --tool=callgrind` for each workload, drives it with plain EVALSHA calls
(no instance, no gRPC), and subtracts a run that only starts, loads the script and registers one
instance. It reports instructions per script call and per operation for:

- a trivial script (`return 1`), the floor of any EVALSHA;
- the ledger with no operation (what every call pays before its first operation);
- Acquire + Release pairs, one operation a call and in batches of 3 and 8 (group commit), with what
  a call costs on its own and what each operation adds;
- the ledger's workloads again with the model's limits as rolling buckets, against fixed windows;
- the same pairs on script_floor.lua, a script that keeps only the counters and job ids in Redis
  (no lease records, no functions made per call): the floor under any ledger that keeps the
  guarantee, to compare the ledger with.

Needs valgrind (Debian's package). About a minute per workload.

    python bench/script_cost.py [--calls 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from rllocal.processes import free_port, poll_until, redis_argv, redis_server_binary
from rlservice.backend.ledger import Ledger, limits_json
from rlservice.config import MAX_MODELS
from rlservice.types import ModelLimits

PREFIX = "{bench}"
INSTANCE = "bench-instance"
MODEL = "bench-model"
LIMITS = limits_json({MODEL: ModelLimits((10**12, 10**10, None, None), None)})
# The same limits as rolling buckets (SPEC §12), whose cost per RPC must stay within 10 % of fixed windows'.
ROLLING = limits_json({MODEL: ModelLimits((10**12, 10**10, None, None), None, rolling=True)})

Workload = Callable[[redis.Redis, str], None]


def instructions(workload: Workload, work: Path, limits: str = LIMITS) -> int:
    """Instructions redis-server ran in all, from its start to its shutdown, around the workload."""
    out = work / f"callgrind.{time.monotonic_ns()}.out"
    port = free_port()
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *redis_argv(redis_server_binary(), port, work)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_timeout=120)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        poll_until(answers, timeout=120, interval=0.1, what="redis-server under valgrind to answer")
    except AssertionError:
        proc.kill()
        raise
    sha = str(client.script_load(Ledger._script_text()))
    client.evalsha(sha, 1, PREFIX, INSTANCE, "register", 2, limits, MAX_MODELS)
    workload(client, sha)
    # The server closes the connection as it shuts down.
    with contextlib.suppress(redis.ConnectionError):
        client.shutdown(nosave=True)
    proc.wait(120)
    for line in out.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}")


def acquire(n: int) -> list[str | int]:
    return ["acquire", 9, MODEL, f"job-{n}", "small", f"{INSTANCE}/lease-{n}", 100, 1, 3_600_000, "0", "0"]


def release(n: int) -> list[str | int]:
    return ["release", 6, f"{INSTANCE}/lease-{n}", 1, 40, 30, 0, 1]


def pairs(calls: int, batch: int) -> Workload:
    """calls / 2 script calls of `batch` Acquires, each followed by one of their Releases."""

    def run(client: redis.Redis, sha: str) -> None:
        for c in range(calls // 2):
            numbers = range(c * batch, (c + 1) * batch)
            client.evalsha(sha, 1, PREFIX, INSTANCE, *[a for n in numbers for a in acquire(n)])
            client.evalsha(sha, 1, PREFIX, INSTANCE, *[a for n in numbers for a in release(n)])

    return run


FLOOR = Path(__file__).with_name("script_floor.lua")


def floor_pairs(calls: int, batch: int) -> Workload:
    """pairs() on script_floor.lua: what a script costs that keeps only counters and job ids."""

    def run(client: redis.Redis, _: str) -> None:
        sha = str(client.script_load(FLOOR.read_text()))
        for c in range(calls // 2):
            numbers = range(c * batch, (c + 1) * batch)
            leases = [(f"job-{n}", f"{INSTANCE}/lease-{n}") for n in numbers]
            client.evalsha(sha, 1, PREFIX, INSTANCE, *[a for j, x in leases for a in ("a", MODEL, j, x, 100, 1)])
            client.evalsha(sha, 1, PREFIX, INSTANCE, *[a for j, x in leases for a in ("r", MODEL, j, x, 100, 1, 70, 1)])

    return run


def repeat(calls: int, script: str | None) -> Workload:
    """calls script calls with no operation: of `script`, or of the ledger when None."""

    def run(client: redis.Redis, sha: str) -> None:
        if script is not None:
            sha = str(client.script_load(script))
        for _ in range(calls):
            client.evalsha(sha, 1, PREFIX, INSTANCE)

    return run


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--calls", type=int, default=1000, help="script calls per workload (default 1000)")
    args = p.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    calls: int = args.calls
    with tempfile.TemporaryDirectory(prefix="rl-script-cost-") as tmp:
        work = Path(tmp)
        base = instructions(lambda client, sha: None, work)
        rolling_base = instructions(lambda client, sha: None, work, ROLLING)

        def per_call(workload: Workload) -> float:
            return (instructions(workload, work) - base) / calls

        def rolling_per_call(workload: Workload) -> float:
            return (instructions(workload, work, ROLLING) - rolling_base) / calls

        trivial = per_call(repeat(calls, "return 1"))
        empty = per_call(repeat(calls, None))
        rows = [("trivial script (return 1)", trivial, 1), ("ledger, no operation", empty, 0)]
        batched: dict[tuple[str, int], float] = {}
        for label, workload in (("Acquire or Release", pairs), ("floor script, the same", floor_pairs)):
            for batch in (1, 3, 8):
                cost = per_call(workload(calls, batch))
                batched[label, batch] = cost
                rows.append((f"{label}, {batch} a call", cost, batch))
        windows = [("no operation", empty, rolling_per_call(repeat(calls, None)))]
        windows += [
            (f"{b} a call", batched["Acquire or Release", b], rolling_per_call(pairs(calls, b))) for b in (1, 3, 8)
        ]
    print(f"redis-server {redis_server_binary()}; {calls} script calls per workload; instructions under callgrind")
    print(f"{'workload':<34} {'per call':>10} {'per op':>10}")
    for label, cost, ops in rows:
        per_op = f"{cost / ops:,.0f}" if ops else "-"
        print(f"{label:<34} {cost:>10,.0f} {per_op:>10}")
    print()
    for label, what in (("Acquire or Release", "the ledger"), ("floor script, the same", "the floor script")):
        each = (batched[label, 8] - batched[label, 1]) / 7
        fixed = batched[label, 1] - each
        print(
            f"{what}: a call costs {fixed:,.0f} on its own ({fixed / trivial:.1f} trivial EVALSHAs) and each "
            f"operation adds {each:,.0f} ({each / trivial:.1f}); with B operations a call, an RPC costs "
            f"{fixed:,.0f} / B + {each:,.0f}"
        )
    print("\nthe ledger, fixed windows against rolling buckets (instructions per call)")
    print(f"{'Acquire or Release':<34} {'fixed':>10} {'rolling':>10} {'rolling/fixed':>14}")
    for label, fixed_cost, rolling_cost in windows:
        print(f"{label:<34} {fixed_cost:>10,.0f} {rolling_cost:>10,.0f} {rolling_cost / fixed_cost:>14.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
