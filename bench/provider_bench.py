"""Against the provider: workers call rlprovider with one key's limits through N instances and the
proxy, with no limiter (the SDK's own retry on 429), with the limiter, and with the limiter and the
provider's feedback; the limiter modes again beside an outside consumer that spends 30 % of the
key's TPM unseen by the service.

One redis-server and one rlprovider serve the whole bench; every run has its own provider key (TPM
600 000, RPM 900, latency 200-600 ms), its own key prefix on the redis-server, its own N instances
and its own proxy, so the runs of one N go at once and the N one after another. A job is one call of
a 600-token prompt with max_tokens 400 (the job type's estimate is the 1 000 tokens the provider
takes on arrival; answers are 200-400 tokens); each run keeps 40 of them going back to back, more
than the key allows, so the limiter and not the workers bounds the rate. A run starts just after a
minute boundary of wall time (Redis's clock on this machine) and lasts 180 s. Its first minute is
not measured: rlprovider's buckets start full, so a minute from idle may take up to twice the TPM;
the two minutes after it, and the two boundaries that open them, are. The keys of the +outside runs
are emptied just before their start, as minutes of an outside consumer unknown to the service leave
them (see `drain`); the first minute then shows how each mode gets out of that state.

For each run, over the measured minutes: provider 429s per 1 000 calls (the workers', counted on
the SDK's HTTP client with those the SDK retried; the outside consumer's; both together), the
tokens the provider accepted as a share of its TPM (everyone's, and the workers' alone), and
p50/p99 of a job's wait (from its start until its successful call is sent). Per minute, the tokens
accepted and the 429s in the first seconds after the boundary, which is where fixed minute windows
cost. For the limiter runs of one N together, Redis CPU per RPC.

    python bench/provider_bench.py [--instances 1,2,4] [--modes sdk,limiter,feedback,limiter+outside,feedback+outside]
        [--seconds 180] [--workers 40] [--window fixed|rolling] [--logs DIR]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, NoReturn

import httpx2
import yaml
from provider_load import (
    ESTIMATED_TOKENS,
    JOB_TYPE,
    LATENCY_MS,
    MAX_TOKENS,
    MODES,
    OUTPUT_TOKENS,
    OUTSIDE_SHARE,
    PROMPT_OVERHEAD,
    PROMPT_TOKENS,
    PROVIDER_MODEL,
    RPM,
    SERVICE_MODEL,
    TPM,
    LoadSpec,
    Tally,
    WorkerTally,
    has_outside,
    run_load,
    uses_limiter,
)
from redis import Redis
from rlclient import RateLimitClient
from rlclient import errors as rl_errors

from rllocal.processes import RedisServer, poll_until, spawn_module, stop_processes, wait_serving

BOOT_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
# How long a run's callers get after its end to finish what they have in flight.
GRACE_S = 5.0
# The 429s this long after each minute boundary are reported on their own.
BOUNDARY_S = 10.0
# Longer than a minute: a job that finds the window spent waits for the next one rather than fail.
MAX_WAIT_MS = 90_000
# A run starts (and, lasting whole minutes, ends) this long after a boundary.
ALIGN_S = 0.2
# A run's processes get this long to start (the SDK takes a few seconds to import) before its start.
SPAWN_LEAD_S = 10.0
# The +outside keys are emptied this long before their run starts, leaving about this many tokens.
DRAIN_LEAD_S = 3.0
DRAIN_LEFT = 2_000
# How far a minute may stick out of the run and still count as inside it.
MINUTE_SLACK_S = 1.0
TARGET_SHARE = 0.95
TARGET_429_PER_1000 = 1.0


def provider_config(keys: list[str]) -> dict[str, Any]:
    limits = {"api": "openai", "tokens_per_minute": TPM, "requests_per_minute": RPM}
    return {
        "seed": 7,
        "latency_ms": LATENCY_MS,
        "output_tokens": OUTPUT_TOKENS,
        "keys": {key: {PROVIDER_MODEL: limits} for key in keys},
    }


def service_config(window: str, tolerance_tokens: int | None) -> dict[str, Any]:
    model: dict[str, Any] = {"tokens_per_minute": TPM, "requests_per_minute": RPM}
    # Written only when asked: fixed windows are the default, and an older service rejects the field.
    if window == "rolling":
        model["window"] = "rolling"
    feedback = {} if tolerance_tokens is None else {"provider_feedback": {"tolerance_tokens": tolerance_tokens}}
    return feedback | {
        "lend_idle_capacity": True,
        "models": {SERVICE_MODEL: model},
        "job_types": {
            JOB_TYPE: {
                "estimated_tokens": ESTIMATED_TOKENS,
                "estimated_requests": 1,
                "ratio": {"initial": 1.0},
                "max_wait_ms": {SERVICE_MODEL: MAX_WAIT_MS},
            }
        },
    }


# ----- processes ---------------------------------------------------------------------------------


class Processes:
    """Every process the bench starts, so that all of them are stopped whatever happens."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self._procs: list[subprocess.Popen[str]] = []
        self._lock = threading.Lock()

    def spawn(self, module: str, args: list[str], name: str) -> tuple[subprocess.Popen[str], int]:
        proc, port = spawn_module(module, args, self.logs / f"{name}.log", BOOT_TIMEOUT_S, {"RL_LOG_LEVEL": "WARNING"})
        with self._lock:
            self._procs.append(proc)
        return proc, port

    def stop(self, procs: list[subprocess.Popen[str]] | None = None) -> None:
        with self._lock:
            chosen = list(self._procs) if procs is None else procs
            self._procs = [p for p in self._procs if p not in chosen]
        stop_processes(chosen, STOP_TIMEOUT_S)


@dataclass
class Run:
    n: int
    mode: str
    key: str
    prefix: str
    instances: list[int] = field(default_factory=list)
    proxy: int | None = None


def in_parallel(calls: list[Callable[[], None]]) -> None:
    """Runs the calls on threads and raises the first failure once all have ended."""
    if not calls:
        return
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
    for future in futures:
        future.result()


def boot(runs: list[Run], processes: Processes, redis_url: str, config: Path) -> list[subprocess.Popen[str]]:
    """Every limiter run's N instances, then its proxy in front of them; returns the processes."""
    started: list[subprocess.Popen[str]] = []
    limited = [r for r in runs if uses_limiter(r.mode)]

    def instance(run: Run, i: int) -> Callable[[], None]:
        def start() -> None:
            args = ["--port", "0", "--config", str(config), "--redis-url", redis_url, "--key-prefix", run.prefix]
            proc, port = processes.spawn("rlservice", args, f"{run.prefix}-{i}")
            started.append(proc)
            run.instances.append(port)

        return start

    def proxy(run: Run) -> Callable[[], None]:
        def start() -> None:
            targets = ",".join(f"127.0.0.1:{p}" for p in run.instances)
            proc, port = processes.spawn("rlproxy", ["--port", "0", "--targets", targets], f"{run.prefix}-proxy")
            started.append(proc)
            wait_serving(f"127.0.0.1:{port}", BOOT_TIMEOUT_S)
            run.proxy = port

        return start

    try:
        in_parallel([instance(r, i) for r in limited for i in range(r.n)])
        in_parallel([proxy(r) for r in limited])
    except BaseException:
        processes.stop(started)
        raise
    return started


# ----- one N: its runs at once -------------------------------------------------------------------


@dataclass
class MinuteRow:
    minute: int
    # A full minute after the run's first: the provider's bucket starts full, so the first minute
    # may take up to twice the TPM and shows nothing of the steady state.
    measured: bool
    tokens: int
    requests: int
    ours: int
    outside: int
    calls_workers: int
    calls_outside: int
    refused_workers: int
    refused_outside: int
    early_workers: int
    early_outside: int


@dataclass
class Result:
    run: Run
    workers: WorkerTally
    outside: Tally
    minutes: list[MinuteRow]
    provider_refused: int
    # The provider's 429s by the limit that refused them (the drain's call is not one of them).
    refused_by: dict[str, int]

    @property
    def measured(self) -> list[MinuteRow]:
        return [m for m in self.minutes if m.measured]

    def share(self, tokens: Callable[[MinuteRow], int]) -> float | None:
        measured = self.measured
        return sum(tokens(m) for m in measured) / (TPM * len(measured)) if measured else None

    @property
    def calls(self) -> int:
        return sum(m.calls_workers for m in self.measured)

    @property
    def outside_calls(self) -> int:
        return sum(m.calls_outside for m in self.measured)

    @property
    def per_1000_workers(self) -> float:
        return per_1000(sum(m.refused_workers for m in self.measured), self.calls)

    @property
    def per_1000_outside(self) -> float:
        return per_1000(sum(m.refused_outside for m in self.measured), self.outside_calls)

    @property
    def per_1000_all(self) -> float:
        refused = sum(m.refused_workers + m.refused_outside for m in self.measured)
        return per_1000(refused, self.calls + self.outside_calls)

    @property
    def waits(self) -> list[float]:
        """The waits of the jobs whose successful call was sent in a measured minute."""
        spans = [(m.minute * 60, (m.minute + 1) * 60) for m in self.measured]
        return sorted(wait for sent, wait in self.workers.waits if any(lo <= sent < hi for lo, hi in spans))

    def wait_ms(self, q: float) -> float:
        waits = self.waits
        if not waits:
            return math.nan
        return 1000 * waits[min(len(waits) - 1, int(q * len(waits)))]


def per_1000(refused: int, calls: int) -> float:
    return 1000 * refused / calls if calls else math.nan


@dataclass
class Phase:
    n: int
    results: list[Result]
    redis_cpu_s: float
    rpcs: int
    started_unix: float


def minute_rows(workers: Tally, outside: Tally, stats: dict[str, Any], start: float, end: float) -> list[MinuteRow]:
    """Per wall-clock minute of the run: the provider's accepted counts for the key (everyone's),
    and each caller's answers, accepted tokens and 429s as it counted them."""
    minutes: dict[str, Any] = stats["minutes"]
    first = math.floor(start / 60)
    rows = []
    m = first
    while m * 60 < end - MINUTE_SLACK_S:
        accepted = minutes.get(str(m), {}).get("accepted", {})
        lo, early, hi = m * 60, m * 60 + BOUNDARY_S, (m + 1) * 60

        def count(times: list[float], until: float, lo: float = lo) -> int:
            return sum(lo <= t < until for t in times)

        rows.append(
            MinuteRow(
                minute=m,
                measured=m > first and hi <= end + MINUTE_SLACK_S,
                tokens=int(accepted.get("tokens", 0)),
                requests=int(accepted.get("requests", 0)),
                ours=sum(tokens for t, tokens in workers.accepted if lo <= t < hi),
                outside=sum(tokens for t, tokens in outside.accepted if lo <= t < hi),
                calls_workers=count(workers.answered_at, hi),
                calls_outside=count(outside.answered_at, hi),
                refused_workers=count(workers.refused_at, hi),
                refused_outside=count(outside.refused_at, hi),
                early_workers=count(workers.refused_at, early),
                early_outside=count(outside.refused_at, early),
            )
        )
        m += 1
    return rows


def redis_cpu_s(redis: Redis) -> float:
    info = redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def drain(provider_url: str, key: str) -> None:
    """Empties the key's token bucket with one call that takes nearly all of it (a prompt is charged
    in full, unlike an unused max_tokens). Without the service's knowledge the outside consumer
    overcommits the key by its share every minute, so after a few minutes of it the bucket is empty
    at each boundary; a run from a full bucket would take three minutes to get there."""
    text_tokens = TPM - DRAIN_LEFT - PROMPT_OVERHEAD
    body = {
        "model": PROVIDER_MODEL,
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "x" * (4 * text_tokens)}],
    }
    answer = httpx2.post(
        f"{provider_url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30
    )
    if answer.status_code != 200:
        raise RuntimeError(f"could not empty the bucket of {key}: HTTP {answer.status_code} {answer.text[:200]}")


def wait_registered(run: Run) -> None:
    """Until every instance reports the pool of N: all of them are registered with the ledger."""

    def all_see_n() -> bool:
        for port in run.instances:
            with RateLimitClient(f"127.0.0.1:{port}", rpc_timeout=5) as client:
                try:
                    state = client.allocation()
                except rl_errors.RateLimitError:
                    return False
            pool = state.allocation.pools.get(SERVICE_MODEL)
            if pool is None or pool.tokens_per_minute != TPM // run.n:
                return False
        return True

    poll_until(all_see_n, BOOT_TIMEOUT_S, 0.2, f"{run.prefix}'s {run.n} instances to report the pool of N")


def measure(runs: list[Run], provider_url: str, redis: Redis, args: argparse.Namespace) -> Phase:
    """The runs of one N at once, each in a process of its own, from just after a minute boundary."""
    for run in runs:
        if uses_limiter(run.mode):
            wait_registered(run)
    start = (math.floor((time.time() + SPAWN_LEAD_S) / 60) + 1) * 60 + ALIGN_S
    context = multiprocessing.get_context("spawn")
    children: list[tuple[BaseProcess, Connection]] = []
    try:
        for run in runs:
            spec = LoadSpec(
                run.mode,
                f"{provider_url}/v1",
                run.key,
                f"127.0.0.1:{run.proxy}" if run.proxy is not None else None,
                args.workers,
                args.sdk_retries,
                start,
                args.seconds,
                GRACE_S,
            )
            receiver, sender = context.Pipe(duplex=False)
            child = context.Process(target=run_load, args=(spec, sender), name=f"N={run.n} {run.mode}")
            child.start()
            sender.close()
            children.append((child, receiver))
        time.sleep(max(0.0, start - DRAIN_LEAD_S - time.time()))
        for run in runs:
            if has_outside(run.mode):
                drain(provider_url, run.key)
        time.sleep(max(0.0, start - time.time()))
        cpu_before = redis_cpu_s(redis)
        deadline = start + args.seconds + 4 * GRACE_S + 30
        tallies: list[tuple[WorkerTally, Tally]] = []
        for loader, receiver in children:
            try:
                if not receiver.poll(max(0.0, deadline - time.time())):
                    raise RuntimeError(f"the load of {loader.name} sent nothing by its deadline")
                tallies.append(receiver.recv())
            except EOFError:
                raise RuntimeError(f"the load of {loader.name} failed (see its traceback above)") from None
        cpu_after = redis_cpu_s(redis)
        stats = httpx2.get(f"{provider_url}/stats", timeout=10).json()
    finally:
        for loader, receiver in children:
            receiver.close()
            loader.join(GRACE_S)
            if loader.is_alive():
                loader.terminate()
                loader.join()
    end = start + args.seconds
    results = []
    for run, (workers, outside) in zip(runs, tallies, strict=True):
        key_stats = stats["keys"][run.key][PROVIDER_MODEL]
        rows = minute_rows(workers, outside, key_stats, start, end)
        refused = int(key_stats["refused"]["requests"])
        results.append(Result(run, workers, outside, rows, refused, dict(key_stats["refused_by"])))
    rpcs = sum(workers.rpcs for workers, _ in tallies)
    return Phase(runs[0].n, results, cpu_after - cpu_before, rpcs, start)


# ----- report ------------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) for v, w in zip(values, widths, strict=True))

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def num(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.1f}"


def summary(results: list[Result]) -> str:
    headers = [
        "N",
        "mode",
        "jobs",
        "calls",
        "429/1000 workers",
        "outside calls",
        "429/1000 outside",
        "429/1000 all",
        "TPM used: all",
        "ours",
        "wait p50 ms",
        "wait p99 ms",
    ]
    rows = []
    for r in results:
        outside = has_outside(r.run.mode)
        rows.append(
            [
                str(r.run.n),
                r.run.mode,
                f"{len(r.waits):,}",
                f"{r.calls:,}",
                num(r.per_1000_workers),
                f"{r.outside_calls:,}" if outside else "-",
                num(r.per_1000_outside) if outside else "-",
                num(r.per_1000_all),
                pct(r.share(lambda m: m.tokens)),
                pct(r.share(lambda m: m.ours)),
                f"{r.wait_ms(0.5):,.0f}",
                f"{r.wait_ms(0.99):,.0f}",
            ]
        )
    return table(headers, rows)


def per_minute(results: list[Result]) -> str:
    headers = [
        "N",
        "mode",
        "minute",
        "measured",
        "tokens all / TPM",
        "ours",
        "outside",
        "requests / RPM",
        "429 workers",
        f"in first {BOUNDARY_S:.0f} s",
        "429 outside",
        f"in first {BOUNDARY_S:.0f} s",
    ]
    rows = []
    for r in results:
        for m in r.minutes:
            rows.append(
                [
                    str(r.run.n),
                    r.run.mode,
                    datetime.fromtimestamp(m.minute * 60, UTC).strftime("%H:%M"),
                    "yes" if m.measured else "no",
                    f"{m.tokens / TPM:.1%}",
                    f"{m.ours / TPM:.1%}",
                    f"{m.outside / TPM:.1%}",
                    f"{m.requests / RPM:.1%}",
                    str(m.refused_workers),
                    str(m.early_workers),
                    str(m.refused_outside),
                    str(m.early_outside),
                ]
            )
    return table(headers, rows)


def details(r: Result) -> str:
    w = r.workers
    counted = len(w.refused_at) + len(r.outside.refused_at)
    by = ", ".join(f"{limit} {n}" for limit, n in sorted(r.refused_by.items()))
    parts = [
        f"N={r.run.n} {r.run.mode}: provider counted {r.provider_refused} 429s ({by or 'none'}), the callers {counted}"
    ]
    if r.run.mode == "sdk":
        parts.append(f"{w.failed_jobs} jobs still refused after the SDK's retries")
    else:
        parts.append(f"{w.acquire_timeouts} Acquires that ended without a grant (the run's end included)")
    if r.run.mode.startswith("feedback"):
        parts.append(f"{w.external_tokens:,} tokens charged as external usage, {w.pauses} releases that paused")
    errors = w.errors + r.outside.errors
    if errors:
        parts.append("errors: " + "; ".join(f"{e} (x{c})" for e, c in errors.most_common(5)))
    return "; ".join(parts)


def verdicts(results: list[Result]) -> list[str]:
    """The issue's targets, for the runs with feedback: the share of the TPM used, 429s per 1 000."""
    lines = []
    for r in results:
        if not r.run.mode.startswith("feedback"):
            continue
        share = r.share(lambda m: m.tokens)
        met = share is not None and share >= TARGET_SHARE
        used = "no measured minute" if share is None else f"{share:.1%} used ({'met' if met else 'missed'})"
        rate = r.per_1000_all
        refused = f"{rate:.1f} 429s per 1 000 calls ({'met' if rate <= TARGET_429_PER_1000 else 'missed'})"
        lines.append(f"N={r.run.n} {r.run.mode}: {used}; {refused}")
    return lines


def machine(redis_version: str) -> str:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()[0]
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} CPUs ({cpu}); Python {platform.python_version()}; "
        f"redis-server {redis_version}; load average {load:.1f} at the start"
    )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--instances", default="1,2,4", help="instance counts N, one after another (default 1,2,4)")
    p.add_argument("--modes", default=",".join(MODES), help=f"modes run at once for each N (default {','.join(MODES)})")
    p.add_argument(
        "--seconds",
        type=float,
        default=180.0,
        help="length of each run; the first minute is not measured (default 180)",
    )
    p.add_argument("--workers", type=int, default=40, help="jobs each run keeps going at once (default 40)")
    p.add_argument("--sdk-retries", type=int, default=20, help="the SDK's max_retries in the sdk mode (default 20)")
    p.add_argument("--window", choices=("fixed", "rolling"), default="fixed", help="the model's window (default fixed)")
    p.add_argument(
        "--tolerance-tokens",
        type=int,
        default=None,
        help="provider_feedback.tolerance_tokens (default: the service's, the largest estimate)",
    )
    p.add_argument("--logs", type=Path, help="keep the processes' logs and configurations in this folder")
    args = p.parse_args()
    args.ns = [int(x) for x in args.instances.split(",")]
    args.mode_list = [m.strip() for m in args.modes.split(",")]
    unknown = [m for m in args.mode_list if m not in MODES]
    if unknown or not args.mode_list:
        p.error(f"--modes: unknown {', '.join(unknown) or 'none given'}; known: {', '.join(MODES)}")
    if any(n < 1 for n in args.ns):
        p.error("--instances: counts must be positive")
    return args


def on_sigterm(signum: int, frame: object) -> NoReturn:
    # As Ctrl-C: the finally blocks stop every process started.
    raise KeyboardInterrupt


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)
    tag = os.urandom(2).hex()
    runs_by_n = {
        n: [Run(n, mode, f"sk-n{n}-{mode}", f"pb{n}-{mode.replace('+', '-')}-{tag}") for mode in args.mode_list]
        for n in args.ns
    }
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="rl-provider-bench-") as tmp:
        work = Path(tmp)
        logs = args.logs or work
        logs.mkdir(parents=True, exist_ok=True)
        provider_file = logs / "provider.yaml"
        provider_file.write_text(yaml.safe_dump(provider_config([r.key for rs in runs_by_n.values() for r in rs])))
        service_file = logs / "service.yaml"
        service_file.write_text(yaml.safe_dump(service_config(args.window, args.tolerance_tokens)))
        processes = Processes(logs)
        redis_server = RedisServer(work)
        redis_server.start()
        redis = redis_server.client()
        try:
            redis_version = str(redis.info("server")["redis_version"])
            print(f"Machine: {machine(redis_version)}", flush=True)
            _, port = processes.spawn("rlprovider", ["--port", "0", "--config", str(provider_file)], "rlprovider")
            provider_url = f"http://127.0.0.1:{port}"
            for n, runs in runs_by_n.items():
                started = boot(runs, processes, redis_server.url, service_file)
                try:
                    phase = measure(runs, provider_url, redis, args)
                finally:
                    processes.stop(started)
                phases.append(phase)
                print(f"\nN={n}, started {datetime.fromtimestamp(phase.started_unix, UTC):%H:%M:%S} UTC", flush=True)
                print(summary(phase.results), flush=True)
        finally:
            processes.stop()
            redis.close()
            redis_server.stop()
    report(phases, args)
    return 0


def report(phases: list[Phase], args: argparse.Namespace) -> None:
    results = [r for phase in phases for r in phase.results]
    print(
        f"\nOne key per run: TPM {TPM:,}, RPM {RPM}; jobs of a {PROMPT_TOKENS}-token prompt with max_tokens "
        f"{MAX_TOKENS} (estimate {ESTIMATED_TOKENS:,}), {args.workers} at once per run, {args.seconds:.0f} s per run; "
        f"outside consumer at {OUTSIDE_SHARE:.0%} of the TPM; {args.window} windows"
    )
    print("Over the measured minutes (the full minutes after the first):")
    print(summary(results))
    print("\nPer minute (wall clock, UTC): tokens and requests the provider accepted, 429s counted by the callers")
    print(per_minute(results))
    print()
    for r in results:
        print(details(r))
    for phase in phases:
        if phase.rpcs:
            print(
                f"Redis CPU per RPC, N={phase.n} (the limiter runs together): "
                f"{phase.redis_cpu_s * 1e6 / phase.rpcs:.0f} µs over {phase.rpcs:,} Acquire and Release calls"
            )
    lines = verdicts(results)
    if lines:
        limits = f"at least {TARGET_SHARE:.0%} used, at most {TARGET_429_PER_1000:.0f} 429 per 1 000 calls"
        print(f"\nTargets with feedback ({limits}):")
        print("\n".join(f"  {line}" for line in lines))


if __name__ == "__main__":
    sys.exit(main())
