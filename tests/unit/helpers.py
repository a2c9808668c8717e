"""Builders shared by the capacity unit tests."""

from __future__ import annotations

from fractions import Fraction

from rlservice.capacity.pools import Dims, Pool
from rlservice.config import Settings, load_settings, preset_path
from rlservice.types import NO_AMOUNTS, RATE_DIMS, Amounts, ModelLimits, Snapshot

# Amounts in RATE_DIMS order: tokens and requests per minute, per day, input and output tokens per
# minute.
Quad = Amounts
ZERO: Quad = NO_AMOUNTS
UNLIMITED: Dims = (None,) * len(RATE_DIMS)


def dims(*amounts: int) -> Amounts:
    """Amounts in RATE_DIMS order; those left off are 0."""
    return (*amounts, *(0,) * (len(RATE_DIMS) - len(amounts)))


def avg(
    tokens: Fraction | float,
    requests: Fraction | float,
    input_tokens: Fraction | float = 0,
    output_tokens: Fraction | float = 0,
) -> tuple[Fraction | float, ...]:
    """Average estimates per kind (tokens, requests, input and output tokens)."""
    return (tokens, requests, input_tokens, output_tokens)


def snapshot(
    instances: int,
    settled: Quad = ZERO,
    open: Quad = ZERO,
    own_open: Quad = ZERO,
    inflight_total: int = 0,
    own_inflight: int = 0,
    waiters: int = 0,
    own_waiting: int = 0,
    own_settled: Quad = ZERO,
) -> Snapshot:
    return Snapshot(
        seq=1,
        now_ms=0,
        minute_window=0,
        day_window=0,
        instances=instances,
        settled=dims(*settled),
        open=dims(*open),
        own_open=dims(*own_open),
        inflight_total=inflight_total,
        own_inflight=own_inflight,
        waiters=waiters,
        own_waiting=own_waiting,
        own_settled=dims(*own_settled),
    )


def tokens(amount: int) -> Quad:
    """An amount in the tokens-per-minute dimension only."""
    return dims(amount)


def limits(
    tpm: int | None = None,
    rpm: int | None = None,
    tpd: int | None = None,
    rpd: int | None = None,
    concurrent: int | None = None,
    itpm: int | None = None,
    otpm: int | None = None,
    cached_as_input: bool = True,
) -> ModelLimits:
    return ModelLimits(
        rates=(tpm, rpm, tpd, rpd, itpm, otpm), max_concurrent=concurrent, cached_as_input=cached_as_input
    )


def model_limits(settings: Settings, model: str) -> ModelLimits:
    m = settings.models[model]
    return ModelLimits(
        rates=m.rates(), max_concurrent=m.max_concurrent_requests, cached_as_input=m.cached_tokens_count_as_input
    )


def preset(name: str) -> Settings:
    return load_settings(preset_path(name))


def pool_of(
    capacity_slots: int,
    capacity: Dims = UNLIMITED,
    room: Dims | None = None,
    concurrent_room: int | None = None,
) -> Pool:
    """A pool built directly, for share tests that need exact figures rather than a ledger state:
    the instance may hold capacity (capacity_slots in slots) and may still take room (by default
    all of it)."""
    capacity = _padded(capacity)
    return Pool(
        rates=capacity,
        max_concurrent=None,
        total_slots=capacity_slots,
        capacity=capacity,
        capacity_slots=capacity_slots,
        concurrent_capacity=None,
        room=capacity if room is None else _padded(room),
        concurrent_room=concurrent_room,
        lending=False,
    )


def _padded(rates: Dims) -> Dims:
    return (*rates, *(None,) * (len(RATE_DIMS) - len(rates)))
