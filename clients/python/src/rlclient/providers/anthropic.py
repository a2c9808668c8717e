"""Adapter for the official ``anthropic`` SDK (``pip install 'rlclient[anthropic]'``).

Usage: input is ``input_tokens`` + ``cache_creation_input_tokens``, cached is
``cache_read_input_tokens``, output is ``output_tokens``. Feedback:
``anthropic-ratelimit-tokens-remaining`` → ``remaining_tokens``, ``-requests-remaining`` →
``remaining_requests``, ``-input-tokens-remaining`` → ``remaining_input_tokens``,
``-output-tokens-remaining`` → ``remaining_output_tokens``, ``retry-after`` → ``retry_after_ms``
(on a 429 without it: the ``-reset`` time of what is exhausted).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager

import anthropic
from anthropic.types import Message
from anthropic.types import Usage as AnthropicUsage
from anthropic.types.beta import BetaMessage, BetaUsage

from rlclient.aio import AsyncLease
from rlclient.client import Lease
from rlclient.providers._common import RawResponse, parsed, reporting, status_report, success_report
from rlclient.providers.headers import ANTHROPIC_HEADERS
from rlclient.types import CallReport, ProviderFeedback, Usage

AnthropicAnswer = Message | BetaMessage


def anthropic_usage(usage: AnthropicUsage | BetaUsage) -> Usage:
    """The service's usage kinds from an Anthropic usage."""
    return Usage(
        input_tokens=max(0, usage.input_tokens) + max(0, usage.cache_creation_input_tokens or 0),
        output_tokens=max(0, usage.output_tokens),
        cached_tokens=max(0, usage.cache_read_input_tokens or 0),
    )


def anthropic_feedback(headers: Mapping[str, str], *, rate_limited: bool = False) -> ProviderFeedback:
    """The remaining counts and retry-after in an Anthropic answer's headers."""
    return ANTHROPIC_HEADERS.feedback(headers, refused=rate_limited)


def anthropic_response(response: RawResponse | AnthropicAnswer, headers: Mapping[str, str] | None = None) -> CallReport:
    """SUCCESS with the usage and the headers' feedback, from ``with_raw_response``'s answer
    (``client.messages.with_raw_response.create(...)``), or from a parsed message with its
    ``headers``: ``anthropic_response(await raw.parse(), raw.headers)`` with the asyncio client,
    whose ``parse`` is a coroutine, or a stream's ``get_final_message()``."""
    if isinstance(response, AnthropicAnswer):
        answer: object = response
        headers = headers if headers is not None else {}
    else:
        answer, headers = parsed(response), response.headers
    usage = answer.usage if isinstance(answer, AnthropicAnswer) else None
    return success_report(anthropic_usage(usage) if usage is not None else None, headers, ANTHROPIC_HEADERS)


def anthropic_error(error: anthropic.APIStatusError) -> CallReport:
    """The report for an error answer: RATE_LIMITED for a ``RateLimitError`` (429) with its
    retry-after and remaining counts; another 4xx is one request and no tokens; a 5xx (529
    overloaded included) leaves the estimate committed."""
    return status_report(error.status_code, error.response.headers, ANTHROPIC_HEADERS)


def anthropic_report(lease: Lease | AsyncLease) -> AbstractContextManager[None]:
    """A block whose ``anthropic.APIStatusError`` (a 429's ``RateLimitError`` above all) is
    recorded on the lease as :func:`anthropic_error` reads it, then re-raised."""
    return reporting(lease, anthropic.APIStatusError, anthropic_error)
