"""Plain data shared by every layer: limits, estimates, usage and the ledger's view of a model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

# Rate dimensions in the order the ledger reports them.
RATE_DIMS = ("tokens_per_minute", "requests_per_minute", "tokens_per_day", "requests_per_day")
TOKEN_DIMS = (0, 2)
MINUTE_DIMS = (0, 1)


class Outcome(IntEnum):
    SUCCESS = 1
    FAILED_WITH_USAGE = 2
    FAILED_UNKNOWN_USAGE = 3
    RATE_LIMITED = 4


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """Rate limits in RATE_DIMS order (None = not limited) and the concurrency limit."""

    rates: tuple[int | None, int | None, int | None, int | None]
    max_concurrent: int | None
    # Rolling buckets (SPEC §12) instead of fixed minute and day windows.
    rolling: bool = False

    @property
    def tracks_minute(self) -> bool:
        return self.rates[0] is not None or self.rates[1] is not None

    @property
    def tracks_day(self) -> bool:
        return self.rates[2] is not None or self.rates[3] is not None


@dataclass(frozen=True, slots=True)
class Estimate:
    tokens: int
    requests: int

    def per_dim(self) -> tuple[int, int, int, int]:
        return (self.tokens, self.requests, self.tokens, self.requests)


@dataclass(frozen=True, slots=True)
class Usage:
    request_count: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cached_tokens


@dataclass(frozen=True, slots=True)
class ProviderFeedback:
    """What a provider's answer said, passed on by a Release (SPEC §11): a 429's retry-after and the
    remaining capacity of the key; None where the answer did not say."""

    retry_after_ms: int = 0
    remaining_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_input_tokens: int | None = None
    remaining_output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A model's ledger state as seen by one instance, at Redis time now_ms.

    settled (usage of leases closed in the window), open (estimates of leases still open),
    own_open (this instance's open estimates) and own_settled (the usage of this instance's closed
    leases) are in RATE_DIMS order for the current minute and day windows. waiters counts the live
    instances with requests waiting for the model, own_waiting is 1 when this instance is one of
    them. paused_until_ms is the Redis time until which a provider's 429 holds the model (0 for
    none); external is the minute window's usage the provider reported beyond the ledger's
    (tokens, requests), part of settled.
    """

    seq: int
    now_ms: int
    minute_window: int
    day_window: int
    instances: int
    settled: tuple[int, int, int, int]
    open: tuple[int, int, int, int]
    own_open: tuple[int, int, int, int]
    inflight_total: int
    own_inflight: int
    waiters: int = 0
    own_waiting: int = 0
    own_settled: tuple[int, int, int, int] = (0, 0, 0, 0)
    paused_until_ms: int = 0
    external: tuple[int, int] = (0, 0)

    @classmethod
    def from_reply(cls, seq: int, now_ms: int, s: Sequence[int]) -> Snapshot:
        return cls(
            seq=seq,
            now_ms=now_ms,
            minute_window=s[0],
            day_window=s[1],
            instances=s[2],
            settled=(s[3], s[4], s[11], s[12]),
            open=(s[5], s[6], s[13], s[14]),
            own_open=(s[7], s[8], s[15], s[16]),
            own_settled=(s[9], s[10], s[17], s[18]),
            inflight_total=s[19],
            own_inflight=s[20],
            waiters=s[21],
            own_waiting=s[22],
            paused_until_ms=s[23],
            external=(s[24], s[25]),
        )

    @classmethod
    def empty(cls) -> Snapshot:
        zero = (0, 0, 0, 0)
        return cls(0, 0, 0, 0, 1, zero, zero, zero, 0, 0)

    @property
    def others_waiting(self) -> bool:
        return self.waiters - self.own_waiting > 0
