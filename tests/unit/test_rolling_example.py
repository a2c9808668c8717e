"""The rolling-window worked example of docs/capacity.md, number by number: TPM 120 000 on a rolling
bucket, N = 2, one job type of 10 000 tokens, as an instance mirrors the ledger."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

from rlservice.capacity.pools import Pool, compute_pool
from rlservice.capacity.rolling import first_fit_ms, full_in_ms, refilled
from rlservice.types import ModelLimits, Snapshot

from .helpers import avg, snapshot, tokens

TPM, JOB = 120_000, 10_000
LIMITS = ModelLimits(rates=(TPM, None, None, None), max_concurrent=None, rolling=True)


def state(at_s: float, level: int, open: int, own_open: int) -> Snapshot:
    """The ledger's state as it reports a bucket: settled = limit - level - open."""
    snap = snapshot(2, settled=tokens(TPM - level - open), open=tokens(open), own_open=tokens(own_open))
    return replace(snap, now_ms=int(at_s * 1000))


def pool(snap: Snapshot) -> Pool:
    return compute_pool(LIMITS, snap, avg(Fraction(JOB), Fraction(1)))


def level(snap: Snapshot) -> int:
    return TPM - snap.settled[0] - snap.open[0]


def reported(snap: Snapshot) -> tuple[int | None, int]:
    p = pool(snap)
    return p.rates[0], p.total_slots


def fits(snap: Snapshot) -> bool:
    room = pool(snap).room[0]
    return room is not None and room >= JOB


def test_a_fresh_bucket_and_six_open_jobs_move_no_pool() -> None:
    assert reported(state(0, 120_000, 0, 0)) == (60_000, 6)
    after_six = state(0, 60_000, 60_000, 60_000)
    assert reported(after_six) == (60_000, 6)
    assert not fits(after_six)


def test_a_bucket_refills_only_up_to_limit_minus_open() -> None:
    later = refilled(LIMITS, state(0, 60_000, 60_000, 60_000), 3000)
    assert level(later) == 60_000
    assert reported(later) == (60_000, 6)


def test_releases_give_back_what_was_not_used() -> None:
    # Six releases at 4 000 each give back 6 x 6 000.
    released = state(3, 60_000 + 6 * 6000, 0, 0)
    assert level(released) == 96_000
    assert reported(released) == (48_000, 4)
    # B takes what its share allows: four jobs, the fifth would pass 48 000.
    b = state(3, 56_000, 40_000, 40_000)
    assert reported(b) == (48_000, 4)
    assert not fits(b)


def test_seven_seconds_refill_fourteen_thousand_tokens() -> None:
    at_ten = refilled(LIMITS, state(3, 56_000, 40_000, 40_000), 10_000)
    assert level(at_ten) == 70_000
    assert reported(at_ten) == (55_000, 5)


def test_external_usage_and_the_tolerance_are_taken_from_the_bucket() -> None:
    tolerance, remaining = JOB, 30_000
    gap = level(state(10, 70_000, 40_000, 40_000)) - remaining
    assert gap == 40_000
    assert reported(state(10, 70_000 - gap - tolerance, 40_000, 40_000)) == (30_000, 3)


def learnt(snap: Snapshot) -> Snapshot:
    """The state with the outside rate the charge at 10 s taught the bucket: 50 000 tokens x 60 s /
    20 s would be 150 000 a minute, held at half the limit."""
    return replace(snap, outside=(min(50_000 * 60_000 // 20_000, TPM // 2), 0))


def test_an_empty_bucket_serves_each_waiter_when_it_has_refilled_enough() -> None:
    # A took two more: the bucket is empty, 60 000 open, A holds 20 000 of it and B 40 000.
    a = state(10, 0, 60_000, 20_000)
    assert reported(a) == (30_000, 3)
    # At 1 000 tokens a second, with the outside rate learnt.
    assert learnt(a).outside == (60_000, 0)
    assert first_fit_ms(LIMITS, learnt(a), fits) == 20_000
    b = state(10, 0, 60_000, 40_000)
    assert first_fit_ms(LIMITS, learnt(b), fits) == 50_000
    # Learning off (outside_rate_time_constant_ms: 0): 2 000 a second.
    assert first_fit_ms(LIMITS, a, fits) == 15_000
    assert first_fit_ms(LIMITS, b, fits) == 30_000


def test_an_outside_rate_slows_the_refill_and_the_time_to_full() -> None:
    empty = learnt(state(0, 0, 0, 0))
    assert level(refilled(LIMITS, empty, 30_000)) == 30_000
    assert full_in_ms(LIMITS, empty) == 120_000
    assert level(refilled(LIMITS, empty, 150_000)) == TPM


def test_the_bucket_is_full_after_its_period_and_never_above_its_limit() -> None:
    empty = state(0, 0, 0, 0)
    assert full_in_ms(LIMITS, empty) == 60_000
    assert level(refilled(LIMITS, empty, 30_000)) == 60_000
    assert level(refilled(LIMITS, empty, 90_000)) == TPM
    # With jobs open, full means level + open = limit.
    half_open = state(0, 0, 60_000, 0)
    assert full_in_ms(LIMITS, half_open) == 30_000
    assert level(refilled(LIMITS, half_open, 90_000)) == TPM - 60_000
    # Nothing fits a job larger than the whole bucket, however long it waits.
    assert first_fit_ms(LIMITS, empty, lambda s: (pool(s).room[0] or 0) > TPM) is None
