"""What the OpenAI and Anthropic adapters share: the status mapping and the reporting block."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol, TypeVar

from rlclient.aio import AsyncLease
from rlclient.client import Lease
from rlclient.providers.headers import RateLimitHeaders
from rlclient.types import CallReport, Outcome, Usage

log = logging.getLogger("rlclient.providers")

E = TypeVar("E", bound=BaseException)

# A refusal before the model ran: the request counts, no token does.
REFUSED_REQUEST = Usage(request_count=1)


class RawResponse(Protocol):
    """What ``with_raw_response`` returns in both SDKs: the HTTP headers and the parsed body."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    def parse(self) -> object: ...


def parsed(response: RawResponse) -> object:
    """The parsed body of a raw response; an asyncio one (whose ``parse`` is a coroutine, as in the
    asyncio Anthropic client) cannot be read here: its caller awaits ``parse()`` and passes that."""
    if inspect.iscoroutinefunction(response.parse):
        raise TypeError("an asyncio raw response: pass `await raw.parse()` with `headers=raw.headers` instead")
    return response.parse()


def success_report(usage: Usage | None, headers: Mapping[str, str], scheme: RateLimitHeaders) -> CallReport:
    """SUCCESS with the usage and the headers' feedback; an answer without usage (a stream not
    read to its end, say) leaves the estimate committed."""
    feedback = scheme.feedback(headers)
    if usage is None:
        log.warning("the provider's answer carries no usage: releasing as FAILED_UNKNOWN_USAGE")
        return CallReport(Outcome.FAILED_UNKNOWN_USAGE, None, feedback)
    return CallReport(Outcome.SUCCESS, usage, feedback)


def status_report(status: int, headers: Mapping[str, str], scheme: RateLimitHeaders) -> CallReport:
    """An HTTP error answer as a report:

    - 429 → RATE_LIMITED, with the retry-after (else the reset of what is exhausted) and the
      remaining counts;
    - another 4xx → FAILED_WITH_USAGE with one request and no tokens: refused before the model ran;
    - 5xx (and anything else) → FAILED_UNKNOWN_USAGE: the model may have run, the estimate stays.

    A retry-after on any of them is passed on, so the service pauses the model for everyone.
    """
    if status == 429:
        return CallReport(Outcome.RATE_LIMITED, None, scheme.feedback(headers, refused=True))
    feedback = scheme.feedback(headers)
    if 400 <= status < 500:
        return CallReport(Outcome.FAILED_WITH_USAGE, REFUSED_REQUEST, feedback)
    return CallReport(Outcome.FAILED_UNKNOWN_USAGE, None, feedback)


@contextmanager
def reporting(lease: Lease | AsyncLease, errors: type[E], report: Callable[[E], CallReport]) -> Iterator[None]:
    """Records ``report(error)`` on the lease for an error of type ``errors``, then re-raises it."""
    try:
        yield
    except errors as error:
        lease.report(report(error))
        raise
