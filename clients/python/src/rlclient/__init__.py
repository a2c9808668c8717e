"""Client for ``rlservice``: ask for LLM capacity before a provider call, report the real usage after.

Blocking::

    with RateLimitClient("localhost:50051") as client:
        with client.acquire("summary", timeout=30) as lease:
            reply = call_provider(lease.model_id)
            lease.usage(input_tokens=reply.input_tokens, output_tokens=reply.output_tokens)

asyncio::

    async with AsyncRateLimitClient("localhost:50051") as client:
        async with client.acquire("summary", timeout=30) as lease:
            ...

Provider adapters for the official ``openai`` and ``anthropic`` SDKs live in
:mod:`rlclient.providers` (installed with the ``openai``/``anthropic`` extras).
"""

from rlclient.aio import AcquireContext, AsyncLease, AsyncRateLimitClient
from rlclient.client import Lease, RateLimitClient
from rlclient.errors import (
    CapacityExhausted,
    DeadlineExceeded,
    InvalidRequest,
    LeaseNotFound,
    RateLimitError,
    ServiceUnavailable,
    Unauthenticated,
)
from rlclient.retry import RetryPolicy
from rlclient.security import tls_credentials
from rlclient.types import CallReport, Outcome, ProviderFeedback, ReleaseResult, Usage

__all__ = [
    "AcquireContext",
    "AsyncLease",
    "AsyncRateLimitClient",
    "CallReport",
    "CapacityExhausted",
    "DeadlineExceeded",
    "InvalidRequest",
    "Lease",
    "LeaseNotFound",
    "Outcome",
    "ProviderFeedback",
    "RateLimitClient",
    "RateLimitError",
    "ReleaseResult",
    "RetryPolicy",
    "ServiceUnavailable",
    "Unauthenticated",
    "Usage",
    "tls_credentials",
]
