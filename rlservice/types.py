"""Plain data shared by every layer: limits, estimates, usage and the ledger's view of a model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from operator import itemgetter
from typing import Any

# What a rate dimension counts. Per-kind values (a job's estimate, averages, tolerances) are in this
# order.
KINDS = ("tokens", "requests", "input_tokens", "output_tokens")
TOKENS, REQUESTS, INPUT, OUTPUT = range(len(KINDS))


@dataclass(frozen=True, slots=True)
class RateDim:
    name: str
    kind: int
    per_day: bool


# Rate dimensions in the order the ledger reports them.
DIMS = (
    RateDim("tokens_per_minute", TOKENS, per_day=False),
    RateDim("requests_per_minute", REQUESTS, per_day=False),
    RateDim("tokens_per_day", TOKENS, per_day=True),
    RateDim("requests_per_day", REQUESTS, per_day=True),
    RateDim("input_tokens_per_minute", INPUT, per_day=False),
    RateDim("output_tokens_per_minute", OUTPUT, per_day=False),
)
RATE_DIMS = tuple(d.name for d in DIMS)
MINUTE_DIMS = tuple(i for i, d in enumerate(DIMS) if not d.per_day)
DAY_DIMS = tuple(i for i, d in enumerate(DIMS) if d.per_day)
# The dimensions that exist only for models limiting input or output tokens apart (SPEC §12).
KIND_DIMS = tuple(i for i, d in enumerate(DIMS) if d.kind in (INPUT, OUTPUT))

# Amounts and limits in RATE_DIMS order.
Amounts = tuple[int, ...]
Rates = tuple[int | None, ...]
NO_AMOUNTS: Amounts = (0,) * len(DIMS)

_BY_DIM = itemgetter(*(d.kind for d in DIMS))


def by_dim(per_kind: Sequence[Any]) -> tuple[Any, ...]:
    """Per-kind values spread over the rate dimensions, in RATE_DIMS order."""
    spread: tuple[Any, ...] = _BY_DIM(per_kind)
    return spread


class Outcome(IntEnum):
    SUCCESS = 1
    FAILED_WITH_USAGE = 2
    FAILED_UNKNOWN_USAGE = 3
    RATE_LIMITED = 4


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """Rate limits in RATE_DIMS order (None = not limited; dimensions left off at the end are not
    limited) and the concurrency limit."""

    rates: Rates
    max_concurrent: int | None
    # Rolling buckets (SPEC §12) instead of fixed minute and day windows.
    rolling: bool = False
    # Whether cached tokens count towards the input-tokens limit (Anthropic: they do not).
    cached_as_input: bool = True

    def __post_init__(self) -> None:
        if len(self.rates) > len(DIMS):
            raise ValueError(f"{len(self.rates)} rate limits for {len(DIMS)} dimensions")
        # Frozen: the one place the padded tuple can be set.
        object.__setattr__(self, "rates", (*self.rates, *(None,) * (len(DIMS) - len(self.rates))))

    @property
    def tracks_minute(self) -> bool:
        return any(self.rates[i] is not None for i in MINUTE_DIMS)

    @property
    def tracks_day(self) -> bool:
        return any(self.rates[i] is not None for i in DAY_DIMS)

    @property
    def token_kinds(self) -> bool:
        """Whether the model limits input or output tokens apart."""
        return any(self.rates[i] is not None for i in KIND_DIMS)


@dataclass(frozen=True, slots=True)
class Estimate:
    """What one job reserves, per kind. Input tokens include cached ones the model counts as input."""

    tokens: int
    requests: int
    input_tokens: int = 0
    output_tokens: int = 0

    def per_kind(self) -> tuple[int, int, int, int]:
        return (self.tokens, self.requests, self.input_tokens, self.output_tokens)

    def per_dim(self) -> Amounts:
        return by_dim(self.per_kind())


@dataclass(frozen=True, slots=True)
class Usage:
    request_count: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cached_tokens

    def spent(self, cached_as_input: bool) -> Estimate:
        """The usage per kind, as the limits count it: tokens are all three kinds, input tokens
        include the cached ones unless the model says they do not count."""
        input_tokens = self.input_tokens + (self.cached_tokens if cached_as_input else 0)
        return Estimate(self.tokens, self.request_count, input_tokens, self.output_tokens)


@dataclass(frozen=True, slots=True)
class ProviderFeedback:
    """What a provider's answer said, passed on by a Release (SPEC §11): a 429's retry-after and the
    remaining capacity of the key; None where the answer did not say."""

    retry_after_ms: int = 0
    remaining_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_input_tokens: int | None = None
    remaining_output_tokens: int | None = None


# The input and output integers of a state without them.
_NO_KINDS = (0,) * 8


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A model's ledger state as seen by one instance, at Redis time now_ms.

    settled (usage of leases closed in the window), open (estimates of leases still open),
    own_open (this instance's open estimates) and own_settled (the usage of this instance's closed
    leases) are in RATE_DIMS order for the current minute and day windows. waiters counts the live
    instances with requests waiting for the model, own_waiting is 1 when this instance is one of
    them. paused_until_ms is the Redis time until which a provider's 429 holds the model (0 for
    none); external is the minute window's usage the provider reported beyond the ledger's
    (tokens, requests), part of settled. outside is a rolling model's estimate of what an outside
    consumer of the key uses a minute (tokens, requests), by which its minute buckets refill slower.
    """

    seq: int
    now_ms: int
    minute_window: int
    day_window: int
    instances: int
    settled: Amounts
    open: Amounts
    own_open: Amounts
    inflight_total: int
    own_inflight: int
    waiters: int = 0
    own_waiting: int = 0
    own_settled: Amounts = NO_AMOUNTS
    paused_until_ms: int = 0
    external: tuple[int, int] = (0, 0)
    outside: tuple[int, int] = (0, 0)

    @classmethod
    def from_reply(cls, seq: int, now_ms: int, s: Sequence[int]) -> Snapshot:
        """s: the packed state of lib.lua's pack(), 0-based here: 28 integers, then 8 of input and
        output tokens for a model that limits them (0 for the others)."""
        k = s[28:36] if len(s) > 28 else _NO_KINDS
        return cls(
            seq=seq,
            now_ms=now_ms,
            minute_window=s[0],
            day_window=s[1],
            instances=s[2],
            settled=(s[3], s[4], s[11], s[12], k[0], k[1]),
            open=(s[5], s[6], s[13], s[14], k[2], k[3]),
            own_open=(s[7], s[8], s[15], s[16], k[4], k[5]),
            own_settled=(s[9], s[10], s[17], s[18], k[6], k[7]),
            inflight_total=s[19],
            own_inflight=s[20],
            waiters=s[21],
            own_waiting=s[22],
            paused_until_ms=s[23],
            external=(s[24], s[25]),
            outside=(s[26], s[27]),
        )

    @classmethod
    def empty(cls) -> Snapshot:
        return cls(0, 0, 0, 0, 1, NO_AMOUNTS, NO_AMOUNTS, NO_AMOUNTS, 0, 0)

    @property
    def others_waiting(self) -> bool:
        return self.waiters - self.own_waiting > 0
