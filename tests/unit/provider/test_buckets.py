"""Bucket arithmetic and the time formats of the headers, against numbers worked by hand."""

from __future__ import annotations

import math

import pytest

from rlprovider.buckets import Bucket
from rlprovider.timefmt import go_duration, retry_after, rfc3339_utc


def test_starts_full_and_refills_at_limit_over_60_per_second() -> None:
    bucket = Bucket(60, now=100.0)  # 1 a second
    assert bucket.remaining(100.0) == 60
    bucket.take(50, 100.0)
    assert bucket.remaining(100.0) == 10
    assert bucket.remaining(105.0) == 15
    assert bucket.remaining(149.5) == 59
    assert bucket.remaining(150.0) == 60


def test_never_above_capacity() -> None:
    bucket = Bucket(60, now=0.0)
    bucket.take(10, 0.0)
    assert bucket.level(1000.0) == 60
    # A refund on a bucket that refilled meanwhile stops at the capacity.
    bucket.settle(taken=10, used=0, now=1000.0)
    assert bucket.level(1000.0) == 60


def test_has_and_seconds_until() -> None:
    bucket = Bucket(60, now=0.0)
    bucket.take(50, 0.0)
    assert bucket.has(10, 0.0)
    assert not bucket.has(11, 0.0)
    assert bucket.seconds_until(10, 0.0) == 0.0
    assert bucket.seconds_until(20, 5.0) == pytest.approx(5.0)
    assert bucket.seconds_until(61, 5.0) == math.inf
    assert bucket.seconds_until_full(5.0) == pytest.approx(45.0)
    assert bucket.seconds_until_full(50.0) == 0.0


def test_settle_returns_what_was_not_used() -> None:
    bucket = Bucket(60, now=0.0)
    bucket.take(50, 0.0)
    bucket.settle(taken=50, used=30, now=5.0)
    # 10 left, 5 refilled, 20 returned.
    assert bucket.remaining(5.0) == 35
    assert bucket.seconds_until_full(5.0) == pytest.approx(25.0)


def test_settle_above_what_was_taken_goes_into_debt() -> None:
    bucket = Bucket(60, now=0.0)
    bucket.take(60, 0.0)
    bucket.settle(taken=60, used=90, now=0.0)
    assert bucket.level(0.0) == -30
    assert bucket.remaining(0.0) == 0
    assert bucket.seconds_until(1, 0.0) == pytest.approx(31.0)
    assert bucket.seconds_until_full(0.0) == pytest.approx(90.0)


def test_float_refill_reads_as_the_hand_count() -> None:
    bucket = Bucket(500_000, now=0.0)  # 8333.33... a second
    bucket.take(500_000, 0.0)
    # 12 ms refill exactly 100 tokens by hand; in floats, a hair below.
    assert bucket.remaining(0.012) == 100
    assert bucket.has(100, 0.012)


def test_a_clock_that_steps_back_refills_nothing() -> None:
    bucket = Bucket(60, now=10.0)
    bucket.take(30, 10.0)
    assert bucket.remaining(9.0) == 30


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (-1.0, "0s"),
        (0.0004, "1ms"),
        (0.012, "12ms"),
        (0.999, "999ms"),
        (1.0, "1s"),
        (1.5, "1.5s"),
        (1.2345, "1.235s"),
        (20.0000000001, "20s"),
        (59.941, "59.941s"),
        (60.0, "1m0s"),
        (90.5, "1m30.5s"),
        (360.0, "6m0s"),
        (3600.0, "1h0m0s"),
        (3723.25, "1h2m3.25s"),
    ],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_rfc3339_rounds_up_to_the_second() -> None:
    assert rfc3339_utc(0.0) == "1970-01-01T00:00:00Z"
    assert rfc3339_utc(1.2) == "1970-01-01T00:00:02Z"
    assert rfc3339_utc(1_700_000_000.0) == "2023-11-14T22:13:20Z"


@pytest.mark.parametrize(("seconds", "header"), [(0.0, 1), (0.2, 1), (1.0, 1), (1.01, 2), (19.926, 20)])
def test_retry_after_is_whole_seconds_up_and_at_least_one(seconds: float, header: int) -> None:
    assert retry_after(seconds) == header
