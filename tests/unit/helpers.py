"""Builders shared by the capacity unit tests."""

from __future__ import annotations

from rlservice.capacity.pools import Dims, Pool
from rlservice.config import Settings, load_settings, preset_path
from rlservice.types import ModelLimits, Snapshot

Quad = tuple[int, int, int, int]
ZERO: Quad = (0, 0, 0, 0)
UNLIMITED: Dims = (None, None, None, None)


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
        settled=settled,
        open=open,
        own_open=own_open,
        inflight_total=inflight_total,
        own_inflight=own_inflight,
        waiters=waiters,
        own_waiting=own_waiting,
        own_settled=own_settled,
    )


def tokens(amount: int) -> Quad:
    """An amount in the tokens-per-minute dimension only."""
    return (amount, 0, 0, 0)


def limits(
    tpm: int | None = None,
    rpm: int | None = None,
    tpd: int | None = None,
    rpd: int | None = None,
    concurrent: int | None = None,
) -> ModelLimits:
    return ModelLimits(rates=(tpm, rpm, tpd, rpd), max_concurrent=concurrent)


def model_limits(settings: Settings, model: str) -> ModelLimits:
    m = settings.models[model]
    return ModelLimits(
        rates=(m.tokens_per_minute, m.requests_per_minute, m.tokens_per_day, m.requests_per_day),
        max_concurrent=m.max_concurrent_requests,
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
    return Pool(
        rates=capacity,
        max_concurrent=None,
        total_slots=capacity_slots,
        capacity=capacity,
        capacity_slots=capacity_slots,
        concurrent_capacity=None,
        room=capacity if room is None else room,
        concurrent_room=concurrent_room,
        lending=False,
    )
