"""Plain values exchanged with the service, independent of the generated messages."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from rlclient._proto import ratelimit_pb2 as pb


class Outcome(enum.IntEnum):
    """How the provider call that a lease covered ended."""

    SUCCESS = pb.SUCCESS
    FAILED_WITH_USAGE = pb.FAILED_WITH_USAGE
    FAILED_UNKNOWN_USAGE = pb.FAILED_UNKNOWN_USAGE
    # The provider refused the call (HTTP 429): nothing is charged unless the usage says so.
    RATE_LIMITED = pb.RATE_LIMITED


# The outcomes a release may carry without usage.
OUTCOMES_WITHOUT_USAGE = frozenset({Outcome.FAILED_UNKNOWN_USAGE, Outcome.RATE_LIMITED})


@dataclass(frozen=True, slots=True)
class Usage:
    """What a provider call really used, as the provider reported it."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    request_count: int = 1

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cached_tokens

    def to_proto(self) -> pb.Usage:
        return pb.Usage(
            request_count=self.request_count,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cached_tokens=self.cached_tokens,
        )


@dataclass(frozen=True, slots=True)
class ProviderFeedback:
    """What the provider's answer said about the API key: how long to hold off (``retry_after_ms``,
    0 when it did not say) and what it has left (None for what it did not report)."""

    retry_after_ms: int = 0
    remaining_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_input_tokens: int | None = None
    remaining_output_tokens: int | None = None

    def to_proto(self) -> pb.ProviderFeedback:
        return pb.ProviderFeedback(
            retry_after_ms=self.retry_after_ms,
            remaining_tokens=self.remaining_tokens,
            remaining_requests=self.remaining_requests,
            remaining_input_tokens=self.remaining_input_tokens,
            remaining_output_tokens=self.remaining_output_tokens,
        )


@dataclass(frozen=True, slots=True)
class CallReport:
    """How a provider call ended, ready to release a lease with: ``lease.report(report)`` in the
    ``with`` block, or ``lease.release(report.usage, outcome=report.outcome, provider=report.provider)``.

    The provider adapters (:mod:`rlclient.providers`) build these from an SDK's answer or error.
    """

    outcome: Outcome
    usage: Usage | None = None
    provider: ProviderFeedback | None = None

    def __post_init__(self) -> None:
        if self.usage is None and self.outcome not in OUTCOMES_WITHOUT_USAGE:
            raise ValueError(f"{self.outcome.name} needs the usage the provider reported")


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    """The service's answer to a release: what went back to the pool, or beyond the estimate.

    ``paused_until_ms`` (epoch ms, 0 when not paused) is how long the model is paused after a
    release that carried a retry-after; ``external_tokens``/``external_requests`` are what the
    release charged as usage by others of the key, from the provider's remaining counts.
    """

    refunded_tokens: int
    refunded_requests: int
    overage_tokens: int
    overage_requests: int
    same_window: bool
    cost_usd: float
    paused_until_ms: int = 0
    external_tokens: int = 0
    external_requests: int = 0

    @classmethod
    def from_proto(cls, msg: pb.ReleaseResponse) -> ReleaseResult:
        return cls(
            refunded_tokens=msg.refunded_tokens,
            refunded_requests=msg.refunded_requests,
            overage_tokens=msg.overage_tokens,
            overage_requests=msg.overage_requests,
            same_window=msg.same_window,
            cost_usd=msg.cost_usd,
            paused_until_ms=msg.paused_until_ms,
            external_tokens=msg.external_tokens,
            external_requests=msg.external_requests,
        )


def provider_model(model_id: str) -> str:
    """The provider's name for a service model id: ``openai/gpt-5.2`` → ``gpt-5.2``.

    Only the first ``/`` separates the provider (``deepinfra/openai/gpt-oss-20b`` →
    ``openai/gpt-oss-20b``); an id without one is returned as it is.
    """
    _, slash, name = model_id.partition("/")
    return name if slash and name else model_id


def release_request(
    lease_id: str, outcome: Outcome, usage: Usage | None, provider: ProviderFeedback | None = None
) -> pb.ReleaseRequest:
    if usage is None and outcome not in OUTCOMES_WITHOUT_USAGE:
        raise ValueError(f"{outcome.name} needs the usage the provider reported")
    return pb.ReleaseRequest(
        lease_id=lease_id,
        outcome=pb.Outcome.ValueType(outcome.value),
        actual=usage.to_proto() if usage is not None else None,
        provider=provider.to_proto() if provider is not None else None,
    )
