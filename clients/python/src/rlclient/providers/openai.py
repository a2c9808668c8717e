"""Adapter for the official ``openai`` SDK (``pip install 'rlclient[openai]'``).

Usage: ``prompt_tokens`` includes ``prompt_tokens_details.cached_tokens``, so input is
``prompt_tokens`` minus the cached ones, cached is ``cached_tokens``, output is
``completion_tokens`` (the Responses API's ``input_tokens``/``output_tokens`` alike).
Feedback: ``x-ratelimit-remaining-tokens`` → ``remaining_tokens``,
``x-ratelimit-remaining-requests`` → ``remaining_requests``, ``retry-after-ms``/``retry-after`` →
``retry_after_ms`` (on a 429 without them: the ``x-ratelimit-reset-*`` of what is exhausted).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager

import openai
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseUsage

from rlclient.aio import AsyncLease
from rlclient.client import Lease
from rlclient.providers._common import RawResponse, parsed, reporting, status_report, success_report
from rlclient.providers.headers import OPENAI_HEADERS
from rlclient.types import CallReport, ProviderFeedback, Usage

OpenAIAnswer = ChatCompletion | ChatCompletionChunk | Response


def openai_usage(usage: CompletionUsage | ResponseUsage) -> Usage:
    """The service's usage kinds from an OpenAI usage (Chat Completions or Responses)."""
    if isinstance(usage, ResponseUsage):
        prompt, output = usage.input_tokens, usage.output_tokens
        cached = usage.input_tokens_details.cached_tokens if usage.input_tokens_details else 0
    else:
        prompt, output = usage.prompt_tokens, usage.completion_tokens
        details = usage.prompt_tokens_details
        cached = (details.cached_tokens or 0) if details is not None else 0
    cached = max(0, min(cached or 0, prompt))
    return Usage(input_tokens=max(0, prompt - cached), output_tokens=max(0, output), cached_tokens=cached)


def openai_feedback(headers: Mapping[str, str], *, rate_limited: bool = False) -> ProviderFeedback:
    """The remaining counts and retry-after in an OpenAI answer's headers."""
    return OPENAI_HEADERS.feedback(headers, refused=rate_limited)


def openai_response(response: RawResponse | OpenAIAnswer, headers: Mapping[str, str] | None = None) -> CallReport:
    """SUCCESS with the usage and the headers' feedback, from ``with_raw_response``'s answer
    (``client.chat.completions.with_raw_response.create(...)``), or from a parsed completion,
    chunk (the last of a stream with ``include_usage``) or response, with its ``headers``."""
    if isinstance(response, OpenAIAnswer):
        answer: object = response
        headers = headers if headers is not None else {}
    else:
        answer, headers = parsed(response), response.headers
    usage = answer.usage if isinstance(answer, OpenAIAnswer) else None
    return success_report(openai_usage(usage) if usage is not None else None, headers, OPENAI_HEADERS)


def openai_error(error: openai.APIStatusError) -> CallReport:
    """The report for an error answer: RATE_LIMITED for a ``RateLimitError`` (429) with its
    retry-after and remaining counts; another 4xx is one request and no tokens; a 5xx leaves the
    estimate committed."""
    return status_report(error.status_code, error.response.headers, OPENAI_HEADERS)


def openai_report(lease: Lease | AsyncLease) -> AbstractContextManager[None]:
    """A block whose ``openai.APIStatusError`` (a 429's ``RateLimitError`` above all) is recorded
    on the lease as :func:`openai_error` reads it, then re-raised."""
    return reporting(lease, openai.APIStatusError, openai_error)
