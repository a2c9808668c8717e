"""The load of bench/provider_bench.py: workers that call rlprovider through the official openai SDK,
with or without the limiter, and an outside consumer of the same key that the service never hears of.
Each run's load goes in a process of its own (`run_load`), as separate applications would: an SDK
call costs a few milliseconds of CPU, and one event loop for every run would make each run's waits
depend on the others' load.

Every HTTP answer a run's workers get is counted by an event hook on the SDK's own HTTP client, so
the 429s that the SDK retries by itself are counted too. A job's wait is the time from its start
until its successful provider call is sent: the hook notes when each attempt goes out.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from contextvars import ContextVar
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import httpx2
import openai
import uvloop
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from rlclient import AsyncLease, AsyncRateLimitClient, CallReport, Usage
from rlclient import errors as rl_errors
from rlclient.providers.headers import retry_after_ms
from rlclient.providers.openai import openai_report, openai_response

# One key's limits: tokens bind first (about 670 calls a minute against an RPM of 900).
TPM = 600_000
RPM = 900
PROVIDER_MODEL = "gpt-bench"
SERVICE_MODEL = f"bench/{PROVIDER_MODEL}"
JOB_TYPE = "call"
PROMPT_TOKENS = 600
MAX_TOKENS = 400
# rlprovider's seeded draws: the answer's length stays within max_tokens, so a call uses less than
# the provider takes from the bucket on arrival and the difference comes back when it ends.
OUTPUT_TOKENS = {"min": 200, "max": MAX_TOKENS}
LATENCY_MS = {"min": 200, "max": 600}
# What the provider takes on arrival (the prompt and the cap), exact here since the prompt is
# counted the way rlprovider counts it: the job type's estimate.
ESTIMATED_TOKENS = PROMPT_TOKENS + MAX_TOKENS
MEAN_CALL_TOKENS = PROMPT_TOKENS + (OUTPUT_TOKENS["min"] + OUTPUT_TOKENS["max"]) / 2
OUTSIDE_SHARE = 0.3
SDK_TIMEOUT_S = 30.0

# rlprovider counts a prompt as 3 + per message (3 + ceil(characters / 4)) (docs/provider.md): one
# message of 594 four-character words less the last space is 600 tokens. Each answer's usage is
# checked against it.
PROMPT_OVERHEAD = 6
_TEXT = " ".join(["the"] * (PROMPT_TOKENS - PROMPT_OVERHEAD))
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": _TEXT}]
# A refused call used nothing at the provider: no request, no token.
NOTHING_USED = Usage(request_count=0)
# What a 429 without a usable retry-after makes a worker wait (rlprovider always sends one).
DEFAULT_RETRY_S = 1.0

MODES = ("sdk", "limiter", "feedback", "limiter+outside", "feedback+outside")


def uses_limiter(mode: str) -> bool:
    return mode != "sdk"


def has_outside(mode: str) -> bool:
    return mode.endswith("+outside")


@dataclass
class Job:
    started: float
    # When the latest attempt was sent (perf_counter, and unix seconds); the successful one is the last.
    sent: float = 0.0
    sent_unix: float = 0.0


# The worker task's job in progress, for the SDK's request hook (hooks run in the caller's task).
CURRENT_JOB: ContextVar[Job | None] = ContextVar("current_job", default=None)


@dataclass
class Tally:
    """What one caller of the key got from the provider, in unix seconds: every HTTP answer, each
    429, each accepted call with its tokens."""

    answered_at: list[float] = field(default_factory=list)
    refused_at: list[float] = field(default_factory=list)
    accepted: list[tuple[float, int]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def answer(self, status: int) -> None:
        now = time.time()
        self.answered_at.append(now)
        if status == 429:
            self.refused_at.append(now)
        elif status != 200:
            self.errors[f"HTTP {status}"] += 1

    def accept(self, completion: ChatCompletion) -> None:
        usage = completion.usage
        if usage is None or usage.prompt_tokens != PROMPT_TOKENS:
            self.errors[f"prompt counted as {usage.prompt_tokens if usage else None}, not {PROMPT_TOKENS}"] += 1
        self.accepted.append((time.time(), usage.total_tokens if usage is not None else 0))


@dataclass
class WorkerTally(Tally):
    """The workers' tally, with their jobs' waits (when the successful call was sent, unix seconds,
    and the wait in seconds) and what they asked of the service."""

    waits: list[tuple[float, float]] = field(default_factory=list)
    failed_jobs: int = 0
    acquire_timeouts: int = 0
    rpcs: int = 0
    external_tokens: int = 0
    pauses: int = 0


def sdk_client(base_url: str, key: str, max_retries: int, tally: Tally) -> openai.AsyncOpenAI:
    async def on_request(request: httpx2.Request) -> None:
        job = CURRENT_JOB.get()
        if job is not None:
            job.sent, job.sent_unix = time.perf_counter(), time.time()

    async def on_response(response: httpx2.Response) -> None:
        tally.answer(response.status_code)

    http = openai.DefaultAsyncHttpxClient(event_hooks={"request": [on_request], "response": [on_response]})
    return openai.AsyncOpenAI(
        base_url=base_url, api_key=key, max_retries=max_retries, timeout=SDK_TIMEOUT_S, http_client=http
    )


async def wait_all(tasks: list[asyncio.Task[None]], grace_s: float) -> None:
    """Cancels what has not ended within `grace_s`, and waits a bounded time for it to unwind."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace_s)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=grace_s)


class Load:
    """One run's callers of one key: `workers` jobs at a time, back to back, in one mode, and in
    the +outside modes a consumer of OUTSIDE_SHARE of the key's TPM, evenly paced."""

    def __init__(self, mode: str, base_url: str, key: str, proxy: str | None, workers: int, sdk_retries: int) -> None:
        self.mode = mode
        self.workers = workers
        self.tally = WorkerTally()
        self.outside = Tally()
        # Through the limiter the SDK must not retry a 429 itself: the service would not see it.
        self._oai = sdk_client(base_url, key, 0 if uses_limiter(mode) else sdk_retries, self.tally)
        self._outside_oai = sdk_client(base_url, key, 0, self.outside)
        self._client = AsyncRateLimitClient(proxy) if proxy is not None else None

    async def close(self) -> None:
        await self._oai.close()
        await self._outside_oai.close()
        if self._client is not None:
            await self._client.close()

    async def run(self, seconds: float, grace_s: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + seconds
        tasks = [asyncio.ensure_future(self._worker(deadline)) for _ in range(self.workers)]
        if has_outside(self.mode):
            tasks.append(asyncio.ensure_future(self._outside(start, deadline)))
        await asyncio.wait(tasks, timeout=seconds)
        await wait_all(tasks, grace_s)

    async def _worker(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            job = Job(time.perf_counter())
            CURRENT_JOB.set(job)
            try:
                done = await self._job(deadline)
            except (openai.APIError, rl_errors.RateLimitError) as error:
                self.tally.errors[f"{type(error).__name__}: {error}"[:160]] += 1
                await asyncio.sleep(0.1)
                continue
            if done:
                self.tally.waits.append((job.sent_unix, job.sent - job.started))

    async def _job(self, deadline: float) -> bool:
        if self.mode == "sdk":
            return await self._sdk_job()
        if self.mode.startswith("feedback"):
            return await self._feedback_job(deadline)
        return await self._limiter_job(deadline)

    async def _sdk_job(self) -> bool:
        """No limiter: the SDK retries a 429 itself, honouring its retry-after."""
        try:
            completion = await self._oai.chat.completions.create(
                model=PROVIDER_MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS
            )
        except openai.RateLimitError:
            self.tally.failed_jobs += 1
            return False
        self.tally.accept(completion)
        return True

    async def _acquire(self, deadline: float) -> AsyncLease | None:
        assert self._client is not None
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return None
        self.tally.rpcs += 1
        try:
            return await self._client.acquire(JOB_TYPE, timeout=left)
        except (rl_errors.CapacityExhausted, rl_errors.DeadlineExceeded):
            self.tally.acquire_timeouts += 1
            return None

    async def _limiter_job(self, deadline: float) -> bool:
        """Acquire, call, release with the usage alone: the service never sees a 429 or a header.
        After a 429 the worker waits its retry-after itself, as the SDK would, then acquires again."""
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            lease = await self._acquire(deadline)
            if lease is None:
                continue
            completion: ChatCompletion | None = None
            retry_s = DEFAULT_RETRY_S
            try:
                async with lease:
                    try:
                        raw = await self._oai.chat.completions.with_raw_response.create(
                            model=lease.provider_model, messages=MESSAGES, max_tokens=MAX_TOKENS
                        )
                    except openai.RateLimitError as refused:
                        lease.fail(NOTHING_USED)
                        asked_ms = retry_after_ms(refused.response.headers)
                        retry_s = asked_ms / 1000 if asked_ms else DEFAULT_RETRY_S
                    else:
                        report = openai_response(raw)
                        lease.report(CallReport(report.outcome, report.usage))
                        completion = raw.parse()
            finally:
                self.tally.rpcs += 1
            if completion is not None:
                self.tally.accept(completion)
                return True
            await asyncio.sleep(retry_s)
        return False

    async def _feedback_job(self, deadline: float) -> bool:
        """The documented adapter pattern: a 429 is released RATE_LIMITED with its retry-after (the
        service pauses the model for every instance), an answer with its remaining headers."""
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            lease = await self._acquire(deadline)
            if lease is None:
                continue
            try:
                async with lease:
                    with openai_report(lease):
                        raw = await self._oai.chat.completions.with_raw_response.create(
                            model=lease.provider_model, messages=MESSAGES, max_tokens=MAX_TOKENS
                        )
                        lease.report(openai_response(raw))
            except openai.RateLimitError:
                continue
            finally:
                self.tally.rpcs += 1
                self._note_release(lease)
            self.tally.accept(raw.parse())
            return True
        return False

    def _note_release(self, lease: AsyncLease) -> None:
        result = lease.result
        if result is not None:
            self.tally.external_tokens += result.external_tokens
            if result.paused_until_ms:
                self.tally.pauses += 1

    async def _outside(self, start: float, deadline: float) -> None:
        """Calls at even intervals, each on its own so that a slow answer delays no other; a 429 is
        counted and the call dropped: the next one keeps its time."""
        loop = asyncio.get_running_loop()
        interval = MEAN_CALL_TOKENS / (OUTSIDE_SHARE * TPM / 60)
        calls: list[asyncio.Task[None]] = []
        k = 0
        while (at := start + k * interval) < deadline:
            await asyncio.sleep(at - loop.time())
            calls.append(asyncio.ensure_future(self._outside_call()))
            k += 1
        await wait_all(calls, SDK_TIMEOUT_S)

    async def _outside_call(self) -> None:
        try:
            completion = await self._outside_oai.chat.completions.create(
                model=PROVIDER_MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS
            )
        except openai.RateLimitError:
            return
        except openai.APIError as error:
            self.outside.errors[f"{type(error).__name__}: {error}"[:160]] += 1
            return
        self.outside.accept(completion)


@dataclass(frozen=True)
class LoadSpec:
    mode: str
    base_url: str
    key: str
    proxy: str | None
    workers: int
    sdk_retries: int
    # When the run starts (unix seconds), and for how long.
    start: float
    seconds: float
    grace_s: float


def run_load(spec: LoadSpec, results: Connection) -> None:
    """A run's process: waits for the start, runs the load, sends back the workers' tally and the
    outside consumer's."""

    async def main() -> tuple[WorkerTally, Tally]:
        load = Load(spec.mode, spec.base_url, spec.key, spec.proxy, spec.workers, spec.sdk_retries)
        try:
            await asyncio.sleep(max(0.0, spec.start - time.time()))
            await load.run(spec.seconds, spec.grace_s)
        finally:
            await load.close()
        return load.tally, load.outside

    results.send(uvloop.run(main()))
    results.close()
