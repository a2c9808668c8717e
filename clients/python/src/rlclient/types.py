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
class ReleaseResult:
    """The service's answer to a release: what went back to the pool, or beyond the estimate."""

    refunded_tokens: int
    refunded_requests: int
    overage_tokens: int
    overage_requests: int
    same_window: bool
    cost_usd: float

    @classmethod
    def from_proto(cls, msg: pb.ReleaseResponse) -> ReleaseResult:
        return cls(
            refunded_tokens=msg.refunded_tokens,
            refunded_requests=msg.refunded_requests,
            overage_tokens=msg.overage_tokens,
            overage_requests=msg.overage_requests,
            same_window=msg.same_window,
            cost_usd=msg.cost_usd,
        )


def release_request(lease_id: str, outcome: Outcome, usage: Usage | None) -> pb.ReleaseRequest:
    if outcome is not Outcome.FAILED_UNKNOWN_USAGE and usage is None:
        raise ValueError(f"{outcome.name} needs the usage the provider reported")
    return pb.ReleaseRequest(
        lease_id=lease_id,
        outcome=pb.Outcome.ValueType(outcome.value),
        actual=usage.to_proto() if usage is not None else None,
    )
