"""Against an Anthropic-style key that limits input and output tokens apart (ITPM, OTPM): an
input-heavy mix and an output-heavy one, each through N instances and the proxy with the provider's
feedback and rolling windows, each reaching for the limit that binds it.

One redis-server and one rlprovider serve the bench; each mix has its own key (ITPM 400 000, OTPM
80 000, RPM 4 000, no combined tokens limit), its own service model with the key's limits, its own
key prefix, instances and proxy. The two mixes of one N run at once, the N one after another:

- input-heavy: a 4 000-token prompt, max_tokens 200, answers of 100-200 tokens, latency
  300-900 ms: about 100 calls a minute fill the ITPM, and use a fifth of the OTPM;
- output-heavy: a 200-token prompt, max_tokens 2 000, answers of 1 000-2 000 tokens, latency
  2-6 s: about 53 calls a minute fill the OTPM, and use a fortieth of the ITPM.

Each job type's estimates are what the provider takes on arrival: the prompt as input, max_tokens
as output; the release returns what the answer did not use. Workers (30 a mix) keep jobs going back
to back, the documented adapter pattern: `anthropic_report(lease)`, `lease.report(
anthropic_response(message, raw.headers))`. A run starts just after a minute boundary and lasts
180 s; the first minute is not measured (rlprovider's buckets start full, so it may take up to
twice a limit). Over the measured minutes: the input and output tokens the provider accepted as a
share of ITPM and OTPM, provider 429s per 1 000 calls, p50/p99 of a job's wait for its grant, and
Redis CPU per RPC. Target: each mix uses at least 95 % of its binding limit.

    python bench/provider_kinds_bench.py [--instances 1,2,4] [--seconds 180] [--workers 30] [--logs DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import uvloop
import yaml
from anthropic.types import MessageParam
from provider_bench import (
    ALIGN_S,
    GRACE_S,
    MAX_WAIT_MS,
    MINUTE_SLACK_S,
    Processes,
    Run,
    boot,
    machine,
    on_sigterm,
    redis_cpu_s,
    table,
)
from redis import Redis
from rlclient import AsyncRateLimitClient, RateLimitClient
from rlclient import errors as rl_errors
from rlclient.providers.anthropic import anthropic_report, anthropic_response

from rllocal.processes import RedisServer, poll_until
from rlprovider.tokens import TOKENS_PER_MESSAGE, TOKENS_PER_REQUEST, filler

ITPM = 400_000
OTPM = 80_000
RPM = 4_000
LIMIT_OF = {"input": ITPM, "output": OTPM}
SDK_TIMEOUT_S = 30.0
TARGET_SHARE = 0.95
SPAWN_LEAD_S = 5.0
BOOT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Mix:
    name: str
    prompt_tokens: int
    max_tokens: int
    output: tuple[int, int]
    latency_ms: tuple[int, int]
    # The limit the mix reaches first: "input" (ITPM) or "output" (OTPM).
    binding: str

    @property
    def provider_model(self) -> str:
        return f"claude-{self.name}"

    @property
    def service_model(self) -> str:
        return f"bench/{self.provider_model}"

    @property
    def messages(self) -> list[MessageParam]:
        # rlprovider counts a prompt as the request's and the message's overhead plus ceil(chars / 4).
        text = filler(self.prompt_tokens - TOKENS_PER_REQUEST - TOKENS_PER_MESSAGE)
        return [{"role": "user", "content": text}]


MIXES = (
    Mix("input-heavy", 4_000, 200, (100, 200), (300, 900), "input"),
    Mix("output-heavy", 200, 2_000, (1_000, 2_000), (2_000, 6_000), "output"),
)


def provider_config(keys: dict[str, Mix]) -> dict[str, Any]:
    return {
        "seed": 11,
        "keys": {
            key: {
                mix.provider_model: {
                    "api": "anthropic",
                    "input_tokens_per_minute": ITPM,
                    "output_tokens_per_minute": OTPM,
                    "requests_per_minute": RPM,
                    "latency_ms": {"min": mix.latency_ms[0], "max": mix.latency_ms[1]},
                    "output_tokens": {"min": mix.output[0], "max": mix.output[1]},
                }
            }
            for key, mix in keys.items()
        },
    }


def service_config(mix: Mix) -> dict[str, Any]:
    return {
        "lend_idle_capacity": True,
        "models": {
            mix.service_model: {
                "input_tokens_per_minute": ITPM,
                "output_tokens_per_minute": OTPM,
                "requests_per_minute": RPM,
                "window": "rolling",
            }
        },
        "job_types": {
            mix.name: {
                "estimated_input_tokens": mix.prompt_tokens,
                "estimated_output_tokens": mix.max_tokens,
                "estimated_requests": 1,
                "ratio": {"initial": 1.0},
                "max_wait_ms": {mix.service_model: MAX_WAIT_MS},
            }
        },
    }


# ----- the load ------------------------------------------------------------------------------------


@dataclass
class Tally:
    calls: list[float] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)
    # When each job's grant came (unix seconds), and how long it waited for it.
    waits: list[tuple[float, float]] = field(default_factory=list)
    rpcs: int = 0
    external_tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, error: Exception) -> None:
        text = f"{type(error).__name__}: {error}"[:160]
        self.errors[text] = self.errors.get(text, 0) + 1


async def worker(
    mix: Mix, claude: anthropic.AsyncAnthropic, client: AsyncRateLimitClient, deadline: float, tally: Tally
) -> None:
    loop = asyncio.get_running_loop()
    while (left := deadline - loop.time()) > 0:
        asked = time.perf_counter()
        tally.rpcs += 1
        try:
            lease = await client.acquire(mix.name, timeout=left)
        except (rl_errors.CapacityExhausted, rl_errors.DeadlineExceeded):
            continue
        tally.waits.append((time.time(), time.perf_counter() - asked))
        try:
            async with lease:
                with anthropic_report(lease):
                    raw = await claude.messages.with_raw_response.create(
                        model=lease.provider_model, messages=mix.messages, max_tokens=mix.max_tokens
                    )
                    lease.report(anthropic_response(await raw.parse(), raw.headers))
        except anthropic.RateLimitError:
            pass
        except (anthropic.APIError, rl_errors.RateLimitError) as error:
            tally.error(error)
            await asyncio.sleep(0.1)
        finally:
            tally.rpcs += 1
            if lease.result is not None:
                tally.external_tokens += lease.result.external_tokens


async def run_mix(mix: Mix, base_url: str, key: str, proxy: str, workers: int, start: float, seconds: float) -> Tally:
    tally = Tally()

    async def on_response(response: httpx2.Response) -> None:
        tally.calls.append(time.time())
        if response.status_code == 429:
            tally.refused.append(time.time())

    http = anthropic.DefaultAsyncHttpxClient(event_hooks={"response": [on_response]})
    claude = anthropic.AsyncAnthropic(
        base_url=base_url, api_key=key, max_retries=0, timeout=SDK_TIMEOUT_S, http_client=http
    )
    client = AsyncRateLimitClient(proxy)
    try:
        await asyncio.sleep(max(0.0, start - time.time()))
        deadline = asyncio.get_running_loop().time() + seconds
        tasks = [asyncio.ensure_future(worker(mix, claude, client, deadline, tally)) for _ in range(workers)]
        _, pending = await asyncio.wait(tasks, timeout=seconds + GRACE_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        await client.close()
        await claude.close()
    return tally


# ----- one N ---------------------------------------------------------------------------------------


@dataclass
class Result:
    n: int
    mix: Mix
    tally: Tally
    # Per measured minute: input and output tokens the provider accepted.
    minutes: list[tuple[int, int, int]]
    provider_refused: int
    refused_by: dict[str, int]
    measured_from: float
    measured_to: float

    def share(self, kind: str) -> float:
        used = sum(i if kind == "input" else o for _, i, o in self.minutes)
        return used / (LIMIT_OF[kind] * len(self.minutes)) if self.minutes else math.nan

    def in_measured(self, times: list[float]) -> int:
        return sum(self.measured_from <= t < self.measured_to for t in times)

    @property
    def per_1000(self) -> float:
        calls = self.in_measured(self.tally.calls)
        return 1000 * self.in_measured(self.tally.refused) / calls if calls else math.nan

    def wait_ms(self, q: float) -> float:
        waits = sorted(w for at, w in self.tally.waits if self.measured_from <= at < self.measured_to)
        return 1000 * waits[min(len(waits) - 1, int(q * len(waits)))] if waits else math.nan


def wait_registered(run: Run, mix: Mix) -> None:
    def all_see_n() -> bool:
        for port in run.instances:
            with RateLimitClient(f"127.0.0.1:{port}", rpc_timeout=5) as client:
                try:
                    pool = client.allocation().allocation.pools.get(mix.service_model)
                except rl_errors.RateLimitError:
                    return False
            if pool is None or pool.input_tokens_per_minute != ITPM // run.n:
                return False
        return True

    poll_until(all_see_n, BOOT_TIMEOUT_S, 0.2, f"{run.prefix}'s {run.n} instances to report the pool of N")


def measure(
    n: int, runs: list[tuple[Run, Mix]], provider_url: str, redis: Redis, args: argparse.Namespace
) -> tuple[list[Result], float, int]:
    for run, mix in runs:
        wait_registered(run, mix)
    start = (math.floor((time.time() + SPAWN_LEAD_S) / 60) + 1) * 60 + ALIGN_S
    cpu_before = redis_cpu_s(redis)

    async def both() -> list[Tally]:
        loads = [
            run_mix(mix, provider_url, run.key, f"127.0.0.1:{run.proxy}", args.workers, start, args.seconds)
            for run, mix in runs
        ]
        return list(await asyncio.gather(*loads))

    tallies = uvloop.run(both())
    cpu_s = redis_cpu_s(redis) - cpu_before
    stats = httpx2.get(f"{provider_url}/stats", timeout=10).json()
    end = start + args.seconds
    first = math.floor(start / 60)
    results = []
    for (run, mix), tally in zip(runs, tallies, strict=True):
        key_stats = stats["keys"][run.key][mix.provider_model]
        minutes = []
        m = first + 1
        while (m + 1) * 60 <= end + MINUTE_SLACK_S:
            accepted = key_stats["minutes"].get(str(m), {}).get("accepted", {})
            minutes.append((m, int(accepted.get("input_tokens", 0)), int(accepted.get("output_tokens", 0))))
            m += 1
        refused = int(key_stats["refused"]["requests"])
        lo, hi = (first + 1) * 60, m * 60
        results.append(Result(n, mix, tally, minutes, refused, dict(key_stats["refused_by"]), lo, hi))
    return results, cpu_s, sum(t.rpcs for t in tallies)


# ----- report --------------------------------------------------------------------------------------


def num(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.1f}"


def summary(results: list[Result]) -> str:
    headers = ["N", "mix", "binding", "ITPM used", "OTPM used", "calls", "429/1000", "wait p50 ms", "wait p99 ms"]
    rows = [
        [
            str(r.n),
            r.mix.name,
            "ITPM" if r.mix.binding == "input" else "OTPM",
            f"{r.share('input'):.1%}",
            f"{r.share('output'):.1%}",
            f"{r.in_measured(r.tally.calls):,}",
            num(r.per_1000),
            f"{r.wait_ms(0.5):,.0f}",
            f"{r.wait_ms(0.99):,.0f}",
        ]
        for r in results
    ]
    return table(headers, rows)


def per_minute(results: list[Result]) -> str:
    headers = ["N", "mix", "minute", "input / ITPM", "output / OTPM"]
    rows = [
        [
            str(r.n),
            r.mix.name,
            datetime.fromtimestamp(m * 60, UTC).strftime("%H:%M"),
            f"{i / ITPM:.1%}",
            f"{o / OTPM:.1%}",
        ]
        for r in results
        for m, i, o in r.minutes
    ]
    return table(headers, rows)


def details(r: Result) -> str:
    by = ", ".join(f"{limit} {count}" for limit, count in sorted(r.refused_by.items()))
    parts = [
        f"N={r.n} {r.mix.name}: provider counted {r.provider_refused} 429s ({by or 'none'}), "
        f"the callers {len(r.tally.refused)}; {r.tally.external_tokens:,} tokens charged as external usage"
    ]
    if r.tally.errors:
        parts.append("errors: " + "; ".join(f"{e} (x{c})" for e, c in r.tally.errors.items()))
    return "; ".join(parts)


def verdict(r: Result) -> str:
    share = r.share(r.mix.binding)
    met = share >= TARGET_SHARE
    limit = "ITPM" if r.mix.binding == "input" else "OTPM"
    return f"N={r.n} {r.mix.name}: {share:.1%} of the {limit} used ({'met' if met else 'missed'})"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--instances", default="1,2,4", help="instance counts N, one after another (default 1,2,4)")
    p.add_argument("--seconds", type=float, default=180.0, help="length of each run; the first minute is not measured")
    p.add_argument("--workers", type=int, default=30, help="jobs each mix keeps going at once (default 30)")
    p.add_argument("--logs", type=Path, help="keep the processes' logs and configurations in this folder")
    args = p.parse_args()
    args.ns = [int(x) for x in args.instances.split(",")]
    if any(n < 1 for n in args.ns):
        p.error("--instances: counts must be positive")
    if args.seconds < 120:
        p.error("--seconds: at least 120, so that one full minute after the first is measured")
    return args


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)
    tag = os.urandom(2).hex()
    keys = {f"sk-ant-n{n}-{mix.name}": mix for n in args.ns for mix in MIXES}
    results: list[Result] = []
    cpu: list[tuple[int, float, int]] = []
    with tempfile.TemporaryDirectory(prefix="rl-provider-kinds-") as tmp:
        work = Path(tmp)
        logs = args.logs or work
        logs.mkdir(parents=True, exist_ok=True)
        provider_file = logs / "provider.yaml"
        provider_file.write_text(yaml.safe_dump(provider_config(keys)))
        configs = {}
        for mix in MIXES:
            configs[mix.name] = logs / f"service-{mix.name}.yaml"
            configs[mix.name].write_text(yaml.safe_dump(service_config(mix)))
        processes = Processes(logs)
        redis_server = RedisServer(work)
        redis_server.start()
        redis = redis_server.client()
        try:
            print(f"Machine: {machine(str(redis.info('server')['redis_version']))}", flush=True)
            _, port = processes.spawn("rlprovider", ["--port", "0", "--config", str(provider_file)], "rlprovider")
            provider_url = f"http://127.0.0.1:{port}"
            for n in args.ns:
                runs = [
                    (Run(n, "feedback", f"sk-ant-n{n}-{mix.name}", f"pk{n}-{mix.name}-{tag}"), mix) for mix in MIXES
                ]
                started = []
                try:
                    for run, mix in runs:
                        started += boot([run], processes, redis_server.url, configs[mix.name])
                    phase, cpu_s, rpcs = measure(n, runs, provider_url, redis, args)
                finally:
                    processes.stop(started)
                results += phase
                cpu.append((n, cpu_s, rpcs))
                print(f"\nN={n}", flush=True)
                print(summary(phase), flush=True)
        finally:
            processes.stop()
            redis.close()
            redis_server.stop()
    print(
        f"\nAnthropic-style keys: ITPM {ITPM:,}, OTPM {OTPM:,}, RPM {RPM:,}; rolling windows, feedback; "
        f"{args.workers} workers a mix, {args.seconds:.0f} s a run"
    )
    print("Over the measured minutes (the full minutes after the first):")
    print(summary(results))
    print("\nPer measured minute: input and output tokens the provider accepted")
    print(per_minute(results))
    print()
    for r in results:
        print(details(r))
    for n, cpu_s, rpcs in cpu:
        if rpcs:
            print(
                f"Redis CPU per RPC, N={n} (both mixes): {cpu_s * 1e6 / rpcs:.0f} µs "
                f"over {rpcs:,} Acquire and Release calls"
            )
    print(f"\nTarget: each mix uses at least {TARGET_SHARE:.0%} of its binding limit")
    for r in results:
        print(f"  {verdict(r)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
