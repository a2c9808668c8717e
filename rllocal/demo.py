"""python -m rllocal.demo: a local redis-server, two rlservice instances, rlproxy and rlprovider, and a
mixed load of jobs driven through the proxy, each calling the provider simulator with the `openai`
SDK. Prints progress once a second and a summary at the end: the service's side, then the provider's.

The instances run the `default` preset with short per-model waits added to every job type: the
preset alone waits for the next minute window before it escalates, which a short demo never sees.
rlprovider serves each of its models with the same limits under one API key.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import ssl
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import grpc.aio
import openai
import redis
import uvloop
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from openai.types.chat import ChatCompletionMessageParam
from rlclient import AsyncLease, AsyncRateLimitClient, CapacityExhausted, DeadlineExceeded, Outcome
from rlclient import RateLimitError as LimiterError
from rlclient.providers.openai import openai_error, openai_report, openai_response
from rlclient.types import provider_model

from rllocal.processes import (
    answers_ping,
    first_line,
    free_port,
    listening_port,
    poll_until,
    redis_argv,
    redis_server_binary,
    stop_processes,
)
from rllocal.provider_config import DEFAULT_KEY, provider_settings, write_provider_config
from rllocal.redis_cluster import LocalCluster
from rlprovider.tokens import CHARS_PER_TOKEN, prompt_tokens
from rlservice.config import load_settings, preset_path

HOST = "127.0.0.1"
BOOT_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 6.0
ACQUIRE_DEADLINE_S = 2.5
RELEASE_DEADLINE_S = 5.0
STATS_TIMEOUT_S = 5.0
# Jobs still running when the time is up get this long to finish and release: the longest
# acquire, the longest call and then some.
DRAIN_S = ACQUIRE_DEADLINE_S + 5.0
SIGNAL_DRAIN_S = 0.5
# A grant is counted as waited when the service held it at least this long.
WAITED_MS = 10
FOOTNOTE_WIDTH = 110


@dataclass(frozen=True)
class Mix:
    """The load of one job type: concurrent workers, and the service's max_wait_ms on each model of
    the escalation order."""

    workers: int
    max_wait_ms: tuple[int, int, int]


JOB_MIX = {
    "summary": Mix(40, (1000, 800, 1500)),
    "VacationPlanning": Mix(40, (500, 500, 1000)),
    "ImageCreation": Mix(50, (300, 300, 1000)),
    "BudgetCalculation": Mix(30, (200, 200, 600)),
    "WeatherForecast": Mix(30, (0, 0, 0)),
}
THINK_S = (0.0, 0.3)
EXHAUSTED_BACKOFF_S = (0.2, 0.6)

# The provider's answer takes the time a job runs: from a 0.2 s forecast to a 3 s summary. Its
# latency is drawn per model, not per job type, so one spread covers them all.
CALL_LATENCY_MS = (200, 3000)
# Answers are cut at the call's max_tokens, so small jobs mostly fill theirs and summaries often
# end earlier.
ANSWER_TOKENS = (50, 4000)
# What a call asks (its prompt plus max_tokens) against the job type's estimate: a little under
# most of the time, so the release refunds the rest, and now and then above, an overage.
UNDER_ESTIMATE = (0.75, 0.98)
OVER_ESTIMATE = (1.02, 1.3)
OVER_ESTIMATE_SHARE = 0.15
# The part of what a call asks that is its answer's cap (max_tokens); the rest is the prompt.
ANSWER_SHARE = (0.15, 0.35)
# rlprovider counts a one-message chat as this overhead plus a token for every CHARS_PER_TOKEN
# characters of the message, whatever they are.
PROMPT_OVERHEAD = prompt_tokens([""])
PROMPT_TEXT = "Read the notes below, then answer in the format asked. "


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

        try:
            poll_until(
                lambda: answers_ping(proc, client, "redis-server"),
                timeout=BOOT_TIMEOUT_S,
                what="redis-server to answer PING",
            )
        finally:
            client.close()
        return child

    def start_redis_cluster(self) -> str:
        """A local Redis Cluster of three masters; returns the URL of one node (the client finds the
        others). Its nodes are children like the rest, stopped last."""
        nodes = LocalCluster(self.workdir / "redis-cluster")
        try:
            nodes.start()
        finally:
            self.children += [Child("redis-server", n.proc, n.port) for n in nodes.nodes if n.proc is not None]
        return nodes.url

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


def write_demo_config(path: Path) -> tuple[list[str], dict[str, str]]:
    """Writes the default preset with the demo's waits; returns the escalation order and each
    model's window mode (`fixed` unless its configuration names one)."""
    data = yaml.safe_load(preset_path("default").read_text())
    order = data["escalation_order"]
    for name, mix in JOB_MIX.items():
        data["job_types"][name]["max_wait_ms"] = dict(zip(order, mix.max_wait_ms, strict=True))
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return list(order), {m: str(data["models"][m].get("window", "fixed")) for m in order}


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
class Calls:
    """The provider calls on one model as the workers saw them, and what their releases answered."""

    answered: int = 0
    refused: int = 0
    paused: int = 0
    external_tokens: int = 0


@dataclass
class Stats:
    cells: defaultdict[tuple[str, str], Granted] = field(default_factory=lambda: defaultdict(Granted))
    outcomes: defaultdict[str, Outcomes] = field(default_factory=lambda: defaultdict(Outcomes))
    calls: defaultdict[str, Calls] = field(default_factory=lambda: defaultdict(Calls))
    acquiring: int = 0
    cancelled: int = 0
    errors: list[str] = field(default_factory=list)

    def total(self, attr: str) -> int:
        return sum(int(getattr(o, attr)) for o in self.outcomes.values())

    @property
    def escalated(self) -> int:
        return sum(c.escalated for c in self.cells.values())

    @property
    def refused(self) -> int:
        return sum(c.refused for c in self.calls.values())


@dataclass(frozen=True)
class Counted:
    requests: int
    tokens: int


@dataclass(frozen=True)
class ProviderModel:
    """What rlprovider's GET /stats says of one model of the key."""

    limits: dict[str, int]
    accepted: Counted
    refused: Counted
    refused_by: dict[str, int]
    peak_in_flight: int
    # Accepted per wall-clock minute (floor(unix_ms / 60000)), in order.
    minutes: list[tuple[int, Counted]]


@dataclass(frozen=True)
class ProviderStats:
    models: dict[str, ProviderModel]
    errors: dict[str, int]


def read_provider_stats(port: int, key: str) -> ProviderStats:
    with urllib.request.urlopen(f"http://{HOST}:{port}/stats", timeout=STATS_TIMEOUT_S) as reply:
        data = json.load(reply)

    def counted(tally: dict[str, int]) -> Counted:
        return Counted(int(tally["requests"]), int(tally["tokens"]))

    models = {
        name: ProviderModel(
            limits={k: int(v) for k, v in m["limits"].items()},
            accepted=counted(m["accepted"]),
            refused=counted(m["refused"]),
            refused_by={k: int(v) for k, v in m["refused_by"].items()},
            peak_in_flight=int(m["peak_in_flight"]),
            minutes=[(int(minute), counted(c["accepted"])) for minute, c in m["minutes"].items()],
        )
        for name, m in data["keys"][key].items()
    }
    return ProviderStats(models, {status: int(n) for status, n in data["errors"].items()})


# ----- load --------------------------------------------------------------------------------------


def call_size(rng: random.Random, estimate: int) -> tuple[int, int]:
    """The prompt tokens and max_tokens of a job whose type estimates `estimate` tokens."""
    over = rng.random() < OVER_ESTIMATE_SHARE
    asked = int(estimate * rng.uniform(*(OVER_ESTIMATE if over else UNDER_ESTIMATE)))
    max_tokens = max(1, int(asked * rng.uniform(*ANSWER_SHARE)))
    return max(PROMPT_OVERHEAD + 1, asked - max_tokens), max_tokens


def chat(tokens: int) -> list[ChatCompletionMessageParam]:
    """One user message that rlprovider counts as `tokens` prompt tokens."""
    chars = CHARS_PER_TOKEN * (tokens - PROMPT_OVERHEAD)
    return [{"role": "user", "content": (PROMPT_TEXT * (chars // len(PROMPT_TEXT) + 1))[:chars]}]


async def acquire(limiter: AsyncRateLimitClient, job_type: str, stats: Stats) -> AsyncLease | None:
    """A lease, or None when the service gave none; either way counted in the job type's outcomes."""
    outcomes = stats.outcomes[job_type]
    outcomes.attempts += 1
    stats.acquiring += 1
    try:
        lease = await limiter.acquire(job_type, timeout=ACQUIRE_DEADLINE_S)
    except CapacityExhausted:
        outcomes.exhausted += 1
        return None
    except DeadlineExceeded:
        outcomes.deadline += 1
        return None
    except LimiterError as e:
        outcomes.failed += 1
        stats.errors.append(f"Acquire {job_type}: {e}")
        return None
    finally:
        stats.acquiring -= 1
    outcomes.granted += 1
    return lease


async def run_job(
    limiter: AsyncRateLimitClient, llm: openai.AsyncOpenAI, job_type: str, stats: Stats, rng: random.Random
) -> None:
    lease = await acquire(limiter, job_type, stats)
    if lease is None:
        await asyncio.sleep(rng.uniform(*EXHAUSTED_BACKOFF_S))
        return
    cell = stats.cells[lease.model_id, job_type]
    cell.count += 1
    if lease.waited_ms >= WAITED_MS:
        cell.waited += 1
        cell.waited_ms += lease.waited_ms
    if len(lease.models_tried) > 1:
        cell.escalated += 1
    prompt, max_tokens = call_size(rng, lease.reserved_tokens)
    # A call that ends without an answer (a lost connection) leaves the estimate committed.
    outcome = Outcome.FAILED_UNKNOWN_USAGE
    try:
        async with lease:
            with openai_report(lease):
                raw = await llm.chat.completions.with_raw_response.create(
                    model=lease.provider_model, messages=chat(prompt), max_tokens=max_tokens
                )
                outcome = lease.report(openai_response(raw)).outcome
    except openai.APIStatusError as e:
        # openai_report released the lease with this reading of the error.
        outcome = openai_error(e).outcome
        if outcome is not Outcome.RATE_LIMITED:
            stats.errors.append(f"{lease.provider_model} {job_type}: {e}")
    except openai.APIError as e:
        stats.errors.append(f"{lease.provider_model} {job_type}: {e}")
    except LimiterError as e:
        stats.errors.append(f"Release {job_type}: {e}")
    calls = stats.calls[lease.model_id]
    calls.answered += outcome is Outcome.SUCCESS
    calls.refused += outcome is Outcome.RATE_LIMITED
    released = lease.result
    if released is None:
        return
    cell.refunded_tokens += released.refunded_tokens
    cell.overage_tokens += released.overage_tokens
    cell.unknown_usage += outcome is Outcome.FAILED_UNKNOWN_USAGE
    cell.cost_usd += released.cost_usd
    calls.paused += released.paused_until_ms > 0
    calls.external_tokens += released.external_tokens


async def worker(
    limiter: AsyncRateLimitClient,
    provider_url: str,
    tls: ssl.SSLContext,
    job_type: str,
    stop: asyncio.Event,
    stats: Stats,
    rng: random.Random,
) -> None:
    # A client a worker: the SDK's connection pool looks at each of its connections on every
    # request, which with every worker in one pool costs more CPU than the calls themselves. They
    # share one TLS context, which each would otherwise build, loading every CA certificate, though
    # the provider speaks plain HTTP. No retries: a 429 the SDK retried by itself would never reach
    # the service.
    http = openai.DefaultAsyncHttpxClient(verify=tls)
    async with openai.AsyncOpenAI(base_url=provider_url, api_key=DEFAULT_KEY, max_retries=0, http_client=http) as llm:
        while not stop.is_set():
            await run_job(limiter, llm, job_type, stats, rng)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), rng.uniform(*THINK_S))


# ----- display -----------------------------------------------------------------------------------


async def in_flight(limiter: AsyncRateLimitClient, instance_ids: list[str], models: list[str]) -> str:
    totals = dict.fromkeys(models, 0)
    queued = 0
    for instance_id in instance_ids:
        try:
            reply = await asyncio.wait_for(limiter.allocation(instance_id), 1)
        except (LimiterError, TimeoutError):
            return "   (allocation unavailable)"
        for model, rows in reply.model_job_types.items():
            totals[model] = totals.get(model, 0) + sum(r.in_flight for r in rows.job_types.values())
            queued += sum(r.waiting for r in rows.job_types.values())
    return "".join(f"{totals[m]:>{len(short(m)) + 2}}" for m in models) + f"{queued:>8}"


async def progress(
    limiter: AsyncRateLimitClient, instance_ids: list[str], models: list[str], stats: Stats, stop: asyncio.Event
) -> None:
    header = "".join(f"  {short(m)}" for m in models)
    print(
        f"\n{'time':>5} {'granted':>8} {'acquiring':>10} {'escalated':>10} {'exhausted':>10} {'deadline':>9}"
        f" {'429s':>5}  | in flight:{header}  queued",
        flush=True,
    )
    started = time.monotonic()
    tick = 0
    while not stop.is_set():
        tick += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, started + tick - time.monotonic()))
        flights = await in_flight(limiter, instance_ids, models)
        print(
            f"{time.monotonic() - started:>4.0f}s {stats.total('granted'):>8} {stats.acquiring:>10} "
            f"{stats.escalated:>10} {stats.total('exhausted'):>10} {stats.total('deadline'):>9} {stats.refused:>5}"
            f"  | {' ' * 9}{flights}",
            flush=True,
        )


def table(headers: list[str], rows: list[list[str]], left: int = 2) -> str:
    """Columns aligned; the first `left` to the left, the numbers after them to the right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def footnote(text: str) -> str:
    return textwrap.fill(f"({text})", width=FOOTNOTE_WIDTH, break_on_hyphens=False)


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


def granted_summary(stats: Stats, models: list[str]) -> str:
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


LIMIT_LABELS = {
    "requests_per_minute": "RPM",
    "tokens_per_minute": "TPM",
    "max_concurrent_requests": "concurrency",
}


def limit_used(side: ProviderModel) -> str:
    """The share of each per-minute limit the provider accepted in each minute, and of the
    concurrency limit at the peak."""
    parts = []
    for name, label in (("tokens_per_minute", "tokens"), ("requests_per_minute", "requests")):
        limit = side.limits.get(name)
        if limit:
            shares = ", ".join(
                f"{getattr(c, label) / limit:.0%} ({time.strftime('%H:%M', time.localtime(minute * 60))})"
                for minute, c in side.minutes
            )
            parts.append(f"{label} {shares or '0%'} of {limit:,}/min")
    concurrency = side.limits.get("max_concurrent_requests")
    if concurrency:
        peak = side.peak_in_flight
        parts.append(f"peak {peak} of {concurrency} concurrent ({peak / concurrency:.0%})")
    return "; ".join(parts)


def provider_summary(stats: Stats, provider: ProviderStats, models: list[str], windows: dict[str, str]) -> str:
    rows = []
    for model in models:
        side, calls = provider.models[provider_model(model)], stats.calls[model]
        rows.append(
            [
                model,
                str(side.accepted.requests),
                f"{side.accepted.tokens:,}",
                str(side.refused.requests),
                f"{side.refused.tokens:,}",
                str(calls.answered),
                str(calls.refused),
                str(calls.paused),
                f"{calls.external_tokens:,}",
            ]
        )
    headers = ["model", "accepted", "accepted tokens", "refused (429)", "refused tokens"]
    headers += ["answered (workers)", "429 (workers)", "paused releases", "external tokens"]
    width = max(len(m) for m in models)
    lines = [
        f"What the provider said (rlprovider GET /stats, key {DEFAULT_KEY})",
        table(headers, rows, left=1),
        footnote(
            "refused tokens: what the refused calls asked, prompt and max_tokens; answered, 429: the same calls as"
            " the workers saw them; paused releases: releases answered with the model paused on every instance by"
            " a 429's retry-after; external tokens: usage the provider's remaining counts showed and the ledger"
            " had not, charged to the model's window"
        ),
        "",
    ]
    for model in models:
        side = provider.models[provider_model(model)]
        refused_by = ", ".join(f"{LIMIT_LABELS.get(k, k)} {n}" for k, n in sorted(side.refused_by.items()))
        line = f"{model:<{width}}  window {windows[model]:<7}  limit used: {limit_used(side)}"
        lines.append(line + (f"; 429s by limit: {refused_by}" if refused_by else ""))
    lines.append(
        footnote(
            "limit used: what the provider accepted in each wall-clock minute the run touched, over its per-minute"
            " limit; a short run fills only part of a minute, and the provider's buckets refill continuously, so a"
            " minute may take more than its limit. window: how the service counts the limit, fixed minute windows"
            " that start full at each minute, or rolling buckets that refill continuously like the provider's"
        )
    )
    if provider.errors:
        lines.append("provider errors by status: " + ", ".join(f"{s}: {n}" for s, n in provider.errors.items()))
    return "\n".join(lines)


# ----- main --------------------------------------------------------------------------------------


async def drive(
    proxy_port: int, instance_ports: list[int], provider_port: int, models: list[str], seconds: float, seed: int | None
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
    instance_ids = []
    for port in instance_ports:
        async with AsyncRateLimitClient(f"{HOST}:{port}") as direct:
            instance_ids.append((await direct.allocation()).instance_id)
    provider_url = f"http://{HOST}:{provider_port}/v1"
    tls = ssl.create_default_context()
    async with AsyncRateLimitClient(f"{HOST}:{proxy_port}", rpc_timeout=RELEASE_DEADLINE_S) as limiter:
        workers = [
            asyncio.create_task(worker(limiter, provider_url, tls, job_type, stop, stats, random.Random(rng.random())))
            for job_type, mix in JOB_MIX.items()
            for _ in range(mix.workers)
        ]
        display = asyncio.create_task(progress(limiter, instance_ids, models, stats, stop))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        stop.set()
        _, late = await asyncio.wait(workers, timeout=SIGNAL_DRAIN_S if stopped_by else DRAIN_S)
        stats.cancelled = len(late)
        for task in [*late, display]:
            task.cancel()
        await asyncio.gather(*late, display, return_exceptions=True)
    print(flush=True)
    return stats, stopped_by


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m rllocal.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="how long to drive the load (default 20)")
    p.add_argument("--seed", type=int, help="seed of the random load, for a repeatable run")
    p.add_argument(
        "--redis-cluster",
        action="store_true",
        default=os.environ.get("REDIS_CLUSTER") == "1",
        help="the ledger on a local Redis Cluster of three masters, the models spread over them (or REDIS_CLUSTER=1)",
    )
    return p.parse_args(argv)


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def run(args: argparse.Namespace, cluster: Cluster) -> int:
    if args.redis_cluster:
        redis_args = ["--redis-cluster", "--redis-url", cluster.start_redis_cluster()]
    else:
        redis_args = ["--redis-url", f"redis://{HOST}:{cluster.start_redis().port}/0"]
    config = cluster.workdir / "demo.yaml"
    models, windows = write_demo_config(config)
    provider_config = cluster.workdir / "provider.yaml"
    # The provider's draws repeat with --seed, and differ from run to run without it.
    provider_seed = random.Random(args.seed).randrange(2**32)
    write_provider_config(
        provider_config,
        provider_settings(
            load_settings(config), seed=provider_seed, latency_ms=CALL_LATENCY_MS, output_tokens=ANSWER_TOKENS
        ),
    )
    provider = cluster.start_module("rlprovider", ["--config", str(provider_config)])
    instances = [cluster.start_module("rlservice", ["--config", str(config), *redis_args]) for _ in "ab"]
    proxy = cluster.start_module("rlproxy", ["--targets", ",".join(f"{HOST}:{c.port}" for c in instances)])
    for c in cluster.children:
        print(f"started {c.name} pid {c.proc.pid} on {HOST}:{c.port}", flush=True)
    print(
        f"driving {sum(m.workers for m in JOB_MIX.values())} workers through the proxy for {args.seconds:g} s,"
        " calling rlprovider with the openai SDK"
    )
    ports = [c.port for c in instances]
    stats, stopped_by = uvloop.run(drive(proxy.port, ports, provider.port, models, args.seconds, args.seed))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        said: ProviderStats | None = read_provider_stats(provider.port, DEFAULT_KEY)
    except OSError as e:
        said = None
        stats.errors.insert(0, f"rlprovider GET /stats: {e}")
    cluster.stop()
    if stopped_by:
        print(f"stopped early by {signal.Signals(stopped_by).name}")
    if stats.cancelled:
        print(f"cancelled {stats.cancelled} jobs still running after the drain")
    print(granted_summary(stats, models))
    if said is not None:
        print()
        print(provider_summary(stats, said, models, windows))
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
