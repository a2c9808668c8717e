"""rlclient's provider adapters with the official SDKs, against rlprovider as a process: the reports
read from real answers and real 429s, and the whole pattern (acquire, call, release with the
report) through a real instance."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest
import yaml
from rlclient import (
    AsyncRateLimitClient,
    CallReport,
    Outcome,
    ProviderFeedback,
    RateLimitClient,
    RetryPolicy,
    Usage,
)
from rlclient.providers.anthropic import anthropic_error, anthropic_report, anthropic_response
from rlclient.providers.openai import openai_error, openai_report, openai_response

from rllocal.processes import spawn_module, stop_process

from .harness import Harness

GPT = "openai/gpt-5.2"
CLAUDE = "anthropic/claude-sonnet-4-5"
GPT_MODEL = GPT.partition("/")[2]
CLAUDE_MODEL = CLAUDE.partition("/")[2]
SUMMARY_TOKENS = 10_000
TIMEOUT = 30.0
QUICK_RETRY = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)
# Typed loosely: the SDKs type messages each with their own TypedDicts.
PROMPT: Any = [{"role": "user", "content": "Summarise the rate limits of this key in one short line."}]

# The lease key is limited as the service's configuration limits the models (the default preset for
# openai/gpt-5.2, SERVICE_MODELS for Claude): its remaining headers and the ledger agree.
LEASE_LIMITS = {"requests_per_minute": 500, "tokens_per_minute": 500_000}
PROVIDER_CONFIG: dict[str, Any] = {
    "seed": 5,
    "latency_ms": {"min": 1, "max": 5},
    "output_tokens": {"min": 5, "max": 40},
    "keys": {
        # Part of every prompt is read from the cache, so the mapping has cached tokens to move.
        "sk-roomy": {
            GPT_MODEL: {"api": "openai", **LEASE_LIMITS, "cached_share": 0.5},
            CLAUDE_MODEL: {
                "api": "anthropic",
                "requests_per_minute": 500,
                "input_tokens_per_minute": 400_000,
                "output_tokens_per_minute": 100_000,
                "cached_share": 0.5,
            },
        },
        # One request a minute: once it is spent, every call is refused with a retry-after.
        "sk-rpm1": {
            GPT_MODEL: {"api": "openai", "requests_per_minute": 1, "tokens_per_minute": 500_000},
            CLAUDE_MODEL: {"api": "anthropic", "requests_per_minute": 1, "tokens_per_minute": 500_000},
        },
        "sk-lease": {
            GPT_MODEL: {"api": "openai", **LEASE_LIMITS, "cached_share": 0.5},
            CLAUDE_MODEL: {"api": "anthropic", **LEASE_LIMITS, "cached_share": 0.5},
        },
    },
}
SERVICE_MODELS = {"models": {CLAUDE: {**LEASE_LIMITS, "pricing": {"input": 3, "cached": 0.3, "output": 15}}}}


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    workdir = tmp_path_factory.mktemp("rlprovider")
    config = workdir / "provider.yaml"
    config.write_text(yaml.safe_dump(PROVIDER_CONFIG))
    proc, port = spawn_module("rlprovider", ["--port", "0", "--config", str(config)], workdir / "log", TIMEOUT)
    try:
        yield port
    finally:
        stop_process(proc)


def gpt(port: int, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=TIMEOUT)


def claude(port: int, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key=key, max_retries=0, timeout=TIMEOUT)


def ask_gpt(client: openai.OpenAI, model: str = GPT_MODEL) -> Any:
    return client.chat.completions.with_raw_response.create(model=model, messages=PROMPT, max_tokens=40)


def ask_claude(client: anthropic.Anthropic, model: str = CLAUDE_MODEL) -> Any:
    return client.messages.with_raw_response.create(model=model, messages=PROMPT, max_tokens=40)


def refusal(call: Callable[[], object], error: type[Exception]) -> Any:
    """Calls until the provider refuses (the key's bucket is then empty); returns the SDK's error."""
    for _ in range(5):
        try:
            call()
        except error as refused:
            return refused
    raise AssertionError(f"five calls and no {error.__name__}")


# ----- reports from the SDKs' answers ------------------------------------------------------------


def test_openai_answer_reports_success_with_usage_and_remaining(port: int) -> None:
    raw = ask_gpt(gpt(port, "sk-roomy"))
    report = openai_response(raw)
    completion = raw.parse()
    usage = completion.usage
    cached = usage.prompt_tokens_details.cached_tokens
    assert cached > 0
    assert report == CallReport(
        Outcome.SUCCESS,
        Usage(input_tokens=usage.prompt_tokens - cached, output_tokens=usage.completion_tokens, cached_tokens=cached),
        ProviderFeedback(
            remaining_tokens=int(raw.headers["x-ratelimit-remaining-tokens"]),
            remaining_requests=int(raw.headers["x-ratelimit-remaining-requests"]),
        ),
    )
    assert report.usage is not None and report.usage.total_tokens == usage.total_tokens
    assert report.provider is not None and report.provider.remaining_requests is not None
    assert 0 < report.provider.remaining_requests < 500
    # The same from the parsed completion and the headers.
    assert openai_response(completion, raw.headers) == report


async def test_async_openai_answer_reports_success(port: int) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-roomy", max_retries=0, timeout=TIMEOUT
    ) as client:
        raw = await client.chat.completions.with_raw_response.create(model=GPT_MODEL, messages=PROMPT, max_tokens=40)
    report = openai_response(raw)
    usage = raw.parse().usage
    assert usage is not None
    assert report.outcome is Outcome.SUCCESS and report.usage is not None
    assert report.usage.output_tokens == usage.completion_tokens
    assert report.provider is not None and report.provider.remaining_tokens is not None


def test_anthropic_answer_reports_success_with_usage_and_remaining(port: int) -> None:
    raw = ask_claude(claude(port, "sk-roomy"))
    report = anthropic_response(raw)
    usage = raw.parse().usage
    assert usage.cache_read_input_tokens > 0
    headers = raw.headers
    assert report == CallReport(
        Outcome.SUCCESS,
        Usage(
            input_tokens=usage.input_tokens + (usage.cache_creation_input_tokens or 0),
            output_tokens=usage.output_tokens,
            cached_tokens=usage.cache_read_input_tokens,
        ),
        ProviderFeedback(
            remaining_tokens=int(headers["anthropic-ratelimit-tokens-remaining"]),
            remaining_requests=int(headers["anthropic-ratelimit-requests-remaining"]),
            remaining_input_tokens=int(headers["anthropic-ratelimit-input-tokens-remaining"]),
            remaining_output_tokens=int(headers["anthropic-ratelimit-output-tokens-remaining"]),
        ),
    )
    assert report.provider is not None and report.provider.remaining_output_tokens is not None
    assert 0 < report.provider.remaining_output_tokens < 100_000


async def test_async_anthropic_answer_reports_success(port: int) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=f"http://127.0.0.1:{port}", api_key="sk-roomy", max_retries=0, timeout=TIMEOUT
    ) as client:
        raw = await client.messages.with_raw_response.create(model=CLAUDE_MODEL, messages=PROMPT, max_tokens=40)
        message = await raw.parse()
    with pytest.raises(TypeError, match=r"await raw\.parse"):
        anthropic_response(raw)  # its parse() is a coroutine: the caller awaits it
    report = anthropic_response(message, raw.headers)
    assert report.outcome is Outcome.SUCCESS and report.usage is not None
    assert report.usage.output_tokens == message.usage.output_tokens
    assert report.provider is not None and report.provider.remaining_requests is not None


# ----- reports from the SDKs' errors -------------------------------------------------------------


def test_openai_429_reports_rate_limited_with_retry_after_and_remaining(port: int) -> None:
    error = refusal(lambda: ask_gpt(gpt(port, "sk-rpm1")), openai.RateLimitError)
    report = openai_error(error)
    assert (report.outcome, report.usage) == (Outcome.RATE_LIMITED, None)
    assert report.provider is not None
    assert report.provider.retry_after_ms == int(error.response.headers["retry-after"]) * 1000 > 0
    assert report.provider.remaining_requests == 0


def test_anthropic_429_reports_rate_limited_with_retry_after_and_remaining(port: int) -> None:
    error = refusal(lambda: ask_claude(claude(port, "sk-rpm1")), anthropic.RateLimitError)
    report = anthropic_error(error)
    assert (report.outcome, report.usage) == (Outcome.RATE_LIMITED, None)
    assert report.provider is not None
    assert report.provider.retry_after_ms == int(error.response.headers["retry-after"]) * 1000 > 0
    assert report.provider.remaining_requests == 0


def test_a_refused_request_counts_one_request_and_no_tokens(port: int) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        ask_gpt(gpt(port, "sk-roomy"), model="gpt-nonexistent")
    with pytest.raises(anthropic.AuthenticationError) as unauthorised:
        ask_claude(claude(port, "sk-nobody"))
    for report in (openai_error(not_found.value), anthropic_error(unauthorised.value)):
        assert report.outcome is Outcome.FAILED_WITH_USAGE
        assert report.usage == Usage(request_count=1)


# ----- the whole pattern through an instance -----------------------------------------------------


def boot(harness: Harness) -> str:
    return harness.boot_instance(0, "default", overrides=SERVICE_MODELS).address


async def test_openai_calls_under_leases_report_success_then_a_429_that_pauses(harness: Harness, port: int) -> None:
    target = boot(harness)
    await harness.within_one_window()
    oai = gpt(port, "sk-lease")
    with RateLimitClient(target, retry=QUICK_RETRY) as client:
        with client.acquire("summary", models=[GPT], timeout=TIMEOUT) as lease, openai_report(lease):
            raw = oai.chat.completions.with_raw_response.create(
                model=lease.provider_model,
                messages=PROMPT,
                max_tokens=40,
            )
            lease.report(openai_response(raw))
        usage = raw.parse().usage
        assert usage is not None and lease.result is not None
        assert lease.result.same_window
        assert lease.result.refunded_tokens == SUMMARY_TOKENS - usage.total_tokens
        assert lease.result.paused_until_ms == 0

        limited_key = gpt(port, "sk-rpm1")
        refusal(lambda: ask_gpt(limited_key), openai.RateLimitError)  # another user of the key spent it
        with (
            pytest.raises(openai.RateLimitError),
            client.acquire("summary", models=[GPT], timeout=TIMEOUT) as limited,
            openai_report(limited),
        ):
            limited_key.chat.completions.with_raw_response.create(
                model=limited.provider_model,
                messages=PROMPT,
                max_tokens=40,
            )
    assert limited.result is not None, "the RATE_LIMITED release was not accepted (see the warning logged)"
    assert limited.result.paused_until_ms > time.time() * 1000


async def test_async_anthropic_calls_under_leases_report_success_then_a_429_that_pauses(
    harness: Harness, port: int
) -> None:
    target = boot(harness)
    await harness.within_one_window()
    async with (
        AsyncRateLimitClient(target, retry=QUICK_RETRY) as client,
        anthropic.AsyncAnthropic(
            base_url=f"http://127.0.0.1:{port}", api_key="sk-lease", max_retries=0, timeout=TIMEOUT
        ) as claude_lease,
        anthropic.AsyncAnthropic(
            base_url=f"http://127.0.0.1:{port}", api_key="sk-rpm1", max_retries=0, timeout=TIMEOUT
        ) as claude_limited,
    ):
        async with client.acquire("summary", models=[CLAUDE], timeout=TIMEOUT) as lease:
            with anthropic_report(lease):
                raw = await claude_lease.messages.with_raw_response.create(
                    model=lease.provider_model,
                    messages=PROMPT,
                    max_tokens=40,
                )
                lease.report(anthropic_response(await raw.parse(), raw.headers))
        usage = (await raw.parse()).usage
        assert lease.result is not None and lease.result.same_window
        spent = usage.input_tokens + usage.output_tokens + (usage.cache_read_input_tokens or 0)
        assert lease.result.refunded_tokens == SUMMARY_TOKENS - spent
        assert lease.result.paused_until_ms == 0

        for _ in range(5):  # another user of the key spends it
            try:
                await claude_limited.messages.create(model=CLAUDE_MODEL, messages=PROMPT, max_tokens=40)
            except anthropic.RateLimitError:
                break
        with pytest.raises(anthropic.RateLimitError):
            async with client.acquire("summary", models=[CLAUDE], timeout=TIMEOUT) as limited:
                with anthropic_report(limited):
                    await claude_limited.messages.with_raw_response.create(
                        model=limited.provider_model,
                        messages=PROMPT,
                        max_tokens=40,
                    )
    assert limited.result is not None, "the RATE_LIMITED release was not accepted (see the warning logged)"
    assert limited.result.paused_until_ms > time.time() * 1000
