"""Minute and UTC-day windows on Redis time."""

from __future__ import annotations

import pytest

from rlservice.capacity.windows import (
    DAY_MS,
    MINUTE_MS,
    day_window,
    default_wait_ms,
    minute_window,
    next_minute_boundary,
)

# 2026-01-01T00:00:00Z
NEW_YEAR_MS = 1_767_225_600_000


@pytest.mark.parametrize(("now", "window"), [(0, 0), (59_999, 0), (60_000, 1), (NEW_YEAR_MS, 29_453_760)])
def test_minute_window(now: int, window: int) -> None:
    assert minute_window(now) == window


@pytest.mark.parametrize(("now", "window"), [(0, 0), (DAY_MS - 1, 0), (DAY_MS, 1), (NEW_YEAR_MS, 20_454)])
def test_day_window_is_the_utc_day(now: int, window: int) -> None:
    assert day_window(now) == window


def test_a_day_starts_on_a_minute_boundary() -> None:
    assert DAY_MS % MINUTE_MS == 0
    assert minute_window(NEW_YEAR_MS) * MINUTE_MS == NEW_YEAR_MS


@pytest.mark.parametrize(("now", "boundary"), [(0, 60_000), (1, 60_000), (59_999, 60_000), (60_000, 120_000)])
def test_next_minute_boundary_is_strictly_later(now: int, boundary: int) -> None:
    assert next_minute_boundary(now) == boundary


@pytest.mark.parametrize(("now", "wait"), [(0, 65_000), (30_000, 35_000), (59_999, 5_001), (60_000, 65_000)])
def test_default_wait_is_to_the_next_minute_plus_five_seconds(now: int, wait: int) -> None:
    assert default_wait_ms(now) == wait
