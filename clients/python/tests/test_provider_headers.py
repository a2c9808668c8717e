"""The providers' rate-limit headers and usage, read without any network: pure parsing and mapping."""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from anthropic.types import Usage as AnthropicUsage
from openai.types import CompletionUsage
from openai.types.completion_usage import PromptTokensDetails
from openai.types.responses import ResponseUsage
from rlclient import CallReport, Outcome, ProviderFeedback, Usage
from rlclient._proto import ratelimit_pb2 as pb
from rlclient.providers import provider_model
from rlclient.providers.anthropic import anthropic_feedback, anthropic_usage
from rlclient.providers.headers import (
    ANTHROPIC_HEADERS,
    parse_count,
    parse_duration,
    parse_retry_after,
    parse_rfc3339,
    retry_after_ms,
)
from rlclient.providers.openai import openai_feedback, openai_usage
from rlclient.types import release_request

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("0", 0),
        ("0s", 0),
        ("12ms", 12),
        ("1s", 1000),
        ("1.5s", 1500),
        ("1m30.5s", 90_500),
        ("6m0s", 360_000),
        ("1h2m3s", 3_723_000),
        ("250us", 1),
        ("999ns", 1),
        ("2m500ms", 120_500),
    ],
)
def test_openai_durations(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "12", "1x", "s", "1m 30s", "-1s", "1.s", "ms", "1e3s", "nan"])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("0", 0),
        ("20", 20_000),
        ("1.5", 1500),
        ("Sun, 01 Mar 2026 12:00:07 GMT", 7000),
        ("Sun, 01 Mar 2026 11:59:00 GMT", 0),  # already past
    ],
)
def test_retry_after_in_seconds_or_as_an_http_date(text: str, ms: int) -> None:
    assert parse_retry_after(text, NOW) == ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2026-03-01T12:00:30Z", 30_000),
        ("2026-03-01T12:00:00.250Z", 250),
        ("2026-03-01T13:00:01+01:00", 1000),
        ("2026-03-01T11:00:00Z", 0),
    ],
)
def test_anthropic_reset_times(text: str, ms: int) -> None:
    assert parse_rfc3339(text, NOW) == ms


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("149984", 149_984), (str(2**63 - 1), 2**63 - 1)])
def test_counts(text: str, value: int) -> None:
    assert parse_count(text) == value


@pytest.mark.parametrize("text", ["", "-1", "1.5", "1_000", "+3", "abc", str(2**63)])
def test_malformed_counts_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_count(text)


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert retry_after_ms({"retry-after-ms": "1234.2", "retry-after": "9"}, NOW) == 1235
    assert retry_after_ms({"retry-after": "9"}, NOW) == 9000
    assert retry_after_ms({"Retry-After": "2"}, NOW) == 2000  # names match whatever their case
    assert retry_after_ms({}, NOW) is None


def test_a_malformed_header_is_ignored_with_a_warning_naming_it(caplog: pytest.LogCaptureFixture) -> None:
    headers = {
        "retry-after-ms": "soon",
        "retry-after": "3",
        "x-ratelimit-remaining-tokens": "lots",
        "x-ratelimit-remaining-requests": "7",
    }
    with caplog.at_level(logging.WARNING, logger="rlclient.providers"):
        feedback = openai_feedback(headers, rate_limited=True)
    assert feedback == ProviderFeedback(retry_after_ms=3000, remaining_tokens=None, remaining_requests=7)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "retry-after-ms" in warned and "x-ratelimit-remaining-tokens" in warned
    assert all(r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize("value", ["nan", "inf", "1e999", "-5", "Thu, 99 Foo 2026", "\x00"])
def test_no_malformed_retry_after_raises(value: str) -> None:
    assert openai_feedback({"retry-after": value}).retry_after_ms == 0
    assert anthropic_feedback({"retry-after": value, "anthropic-ratelimit-tokens-reset": value}).retry_after_ms == 0


def test_openai_feedback() -> None:
    headers = {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-limit-tokens": "30000",
        "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-remaining-tokens": "29000",
        "x-ratelimit-reset-requests": "120ms",
        "x-ratelimit-reset-tokens": "2s",
    }
    assert openai_feedback(headers) == ProviderFeedback(remaining_tokens=29_000, remaining_requests=499)


def test_a_429_without_retry_after_waits_for_the_reset_of_what_is_exhausted() -> None:
    headers = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-remaining-tokens": "10",
        "x-ratelimit-reset-requests": "1m30.5s",
        "x-ratelimit-reset-tokens": "6m0s",  # not exhausted: not waited for
    }
    assert openai_feedback(headers, rate_limited=True).retry_after_ms == 90_500
    assert openai_feedback(headers).retry_after_ms == 0  # an answer that was not refused
    assert openai_feedback({}, rate_limited=True) == ProviderFeedback()


def test_anthropic_feedback() -> None:
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2026-03-01T12:00:04Z",
        "anthropic-ratelimit-tokens-remaining": "9000",
        "anthropic-ratelimit-input-tokens-remaining": "0",
        "anthropic-ratelimit-input-tokens-reset": "2026-03-01T12:00:12Z",
        "anthropic-ratelimit-output-tokens-remaining": "4000",
        "anthropic-ratelimit-output-tokens-reset": "2026-03-01T12:00:59Z",
    }
    expected = ProviderFeedback(
        remaining_tokens=9000, remaining_requests=0, remaining_input_tokens=0, remaining_output_tokens=4000
    )
    assert anthropic_feedback(headers) == expected
    # Refused without retry-after: the latest reset of what is exhausted (requests, input tokens).
    assert ANTHROPIC_HEADERS.feedback(headers, refused=True, now=NOW).retry_after_ms == 12_000
    assert anthropic_feedback({**headers, "retry-after": "5"}, rate_limited=True).retry_after_ms == 5000


def test_openai_usage_takes_the_cached_tokens_out_of_the_prompt() -> None:
    usage = CompletionUsage(
        prompt_tokens=1200,
        completion_tokens=300,
        total_tokens=1500,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=1024),
    )
    assert openai_usage(usage) == Usage(input_tokens=176, output_tokens=300, cached_tokens=1024)
    plain = CompletionUsage(prompt_tokens=50, completion_tokens=7, total_tokens=57)
    assert openai_usage(plain) == Usage(input_tokens=50, output_tokens=7)


def test_openai_responses_usage() -> None:
    usage = ResponseUsage.model_validate(
        {
            "input_tokens": 900,
            "input_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 300},
            "output_tokens": 40,
            "output_tokens_details": {"reasoning_tokens": 10},
            "total_tokens": 940,
        }
    )
    assert openai_usage(usage) == Usage(input_tokens=800, output_tokens=40, cached_tokens=100)


def test_anthropic_usage_counts_cache_writes_as_input_and_cache_reads_as_cached() -> None:
    usage = AnthropicUsage(
        input_tokens=20, output_tokens=500, cache_creation_input_tokens=2000, cache_read_input_tokens=3000
    )
    assert anthropic_usage(usage) == Usage(input_tokens=2020, output_tokens=500, cached_tokens=3000)
    assert anthropic_usage(AnthropicUsage(input_tokens=5, output_tokens=1)) == Usage(input_tokens=5, output_tokens=1)


def test_feedback_goes_into_the_release_request_only_as_reported() -> None:
    feedback = ProviderFeedback(retry_after_ms=1500, remaining_requests=0)
    request = release_request("l1", Outcome.RATE_LIMITED, None, feedback)
    assert request.outcome == pb.RATE_LIMITED and not request.HasField("actual")
    assert request.provider.retry_after_ms == 1500
    assert request.provider.HasField("remaining_requests") and request.provider.remaining_requests == 0
    assert not request.provider.HasField("remaining_tokens")
    assert not release_request("l1", Outcome.SUCCESS, Usage(input_tokens=1)).HasField("provider")


def test_a_report_needs_usage_unless_its_outcome_goes_without() -> None:
    with pytest.raises(ValueError, match="SUCCESS needs the usage"):
        CallReport(Outcome.SUCCESS)
    assert CallReport(Outcome.RATE_LIMITED).usage is None


@pytest.mark.parametrize(
    ("model_id", "name"),
    [
        ("openai/gpt-5.2", "gpt-5.2"),
        ("deepinfra/openai/gpt-oss-20b", "openai/gpt-oss-20b"),
        ("model-alpha", "model-alpha"),
    ],
)
def test_provider_model(model_id: str, name: str) -> None:
    assert provider_model(model_id) == name


def test_rlclient_imports_without_the_sdks() -> None:
    script = (
        "import sys; sys.modules['openai'] = sys.modules['anthropic'] = None\n"
        "import rlclient, rlclient.providers, rlclient.providers.headers\n"
        "try:\n    import rlclient.providers.openai\nexcept ImportError:\n    print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
