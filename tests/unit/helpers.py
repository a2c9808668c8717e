"""Builders shared by the capacity unit tests."""

from __future__ import annotations

from rlservice.capacity.pools import Pool
from rlservice.config import Settings, load_settings, preset_path
from rlservice.types import ModelLimits, Snapshot

Quad = tuple[int, int, int, int]
ZERO: Quad = (0, 0, 0, 0)


def snapshot(
    instances: int,
    total: Quad = ZERO,
    retired: Quad = ZERO,
    own: Quad = ZERO,
    inflight_total: int = 0,
    own_inflight: int = 0,
) -> Snapshot:
    return Snapshot(
        seq=1,
        now_ms=0,
        minute_window=0,
        day_window=0,
        instances=instances,
        total=total,
        retired=retired,
        own=own,
        inflight_total=inflight_total,
        own_inflight=own_inflight,
    )


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
    total_slots: int,
    own_inflight: int = 0,
    rates: tuple[int | None, int | None, int | None, int | None] = (None, None, None, None),
    own: Quad = ZERO,
) -> Pool:
    """A pool built directly, for share tests that need exact figures rather than a ledger state."""
    return Pool(
        rates=rates,
        shares=rates,
        max_concurrent=None,
        concurrent_share=None,
        total_slots=total_slots,
        own=own,
        own_inflight=own_inflight,
    )
