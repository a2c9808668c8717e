"""Local accounting per job type and model across minute and day windows: open estimates (what the
type's share is checked against) and used (open estimates plus settled usage, what GetAllocation
reports)."""

from __future__ import annotations

from rlservice.capacity.usage import TypeUsage
from rlservice.types import Estimate


def charged(minute: int = 10, day: int = 1, tokens: int = 1_000, requests: int = 2) -> TypeUsage:
    usage = TypeUsage()
    usage.charge(minute, day, Estimate(tokens, requests))
    return usage


def used(usage: TypeUsage) -> tuple[int, ...]:
    """What the type used in the tokens and requests dimensions (per minute, per day)."""
    return tuple(usage.used[:4])


def open_now(usage: TypeUsage) -> tuple[int, ...]:
    return usage.open_now()[:4]


def test_charge_in_the_current_windows_opens_everywhere() -> None:
    usage = charged()
    assert (usage.minute_window, usage.day_window) == (10, 1)
    assert open_now(usage) == (1_000, 2, 1_000, 2)
    assert used(usage) == (1_000, 2, 1_000, 2)


def test_charges_add_up_and_a_negative_charge_undoes() -> None:
    usage = charged()
    usage.charge(10, 1, Estimate(500, 1))
    assert open_now(usage) == (1_500, 3, 1_500, 3)
    usage.charge(10, 1, Estimate(1_000, 2), -1)
    assert open_now(usage) == (500, 1, 500, 1)
    assert used(usage) == (500, 1, 500, 1)


def test_a_new_minute_clears_the_minute_dimensions_only() -> None:
    usage = charged()
    usage.roll(11, 1)
    assert open_now(usage) == (0, 0, 1_000, 2)
    assert used(usage) == (0, 0, 1_000, 2)
    assert usage.minute_window == 11


def test_a_new_day_clears_the_day_dimensions() -> None:
    usage = charged()
    usage.roll(1_440 * 2, 2)
    assert open_now(usage) == (0, 0, 0, 0)
    assert used(usage) == (0, 0, 0, 0)
    assert (usage.minute_window, usage.day_window) == (2_880, 2)


def test_roll_never_goes_back() -> None:
    usage = charged(minute=10, day=1)
    usage.roll(9, 0)
    assert (usage.minute_window, usage.day_window) == (10, 1)
    assert open_now(usage) == (1_000, 2, 1_000, 2)


def test_charging_a_closed_window_leaves_it_alone() -> None:
    usage = charged(minute=11)
    usage.charge(10, 1, Estimate(700, 1))
    assert open_now(usage) == (1_000, 2, 1_700, 3)


def test_charging_a_newer_window_rolls_first() -> None:
    usage = charged(minute=10)
    usage.charge(12, 1, Estimate(300, 1))
    assert usage.minute_window == 12
    assert open_now(usage) == (300, 1, 1_300, 3)


def test_a_close_in_its_windows_leaves_open_and_settles_the_actual_usage() -> None:
    usage = charged()
    usage.charge(10, 1, Estimate(1_000, 2))
    usage.close(10, 1, Estimate(1_000, 2), Estimate(600, 1))
    # One lease is still open; the closed one counts at what it used.
    assert open_now(usage) == (1_000, 2, 1_000, 2)
    assert used(usage) == (1_600, 3, 1_600, 3)
    usage.close(10, 1, Estimate(1_000, 2), Estimate(1_250, 5))
    assert open_now(usage) == (0, 0, 0, 0)
    assert used(usage) == (1_850, 6, 1_850, 6)


def test_a_close_at_unknown_usage_settles_the_estimate() -> None:
    usage = charged()
    usage.close(10, 1, Estimate(1_000, 2), None)
    assert open_now(usage) == (0, 0, 0, 0)
    assert used(usage) == (1_000, 2, 1_000, 2)


def test_a_close_after_the_minute_ended_refunds_nothing_there() -> None:
    usage = charged()
    usage.roll(11, 1)
    usage.close(10, 1, Estimate(1_000, 2), Estimate(600, 1))
    # The minute closed with the estimate spent; the day is still open and takes the actual usage.
    assert open_now(usage) == (0, 0, 0, 0)
    assert used(usage) == (0, 0, 600, 1)


def test_an_overage_from_a_closed_window_lands_in_the_current_one() -> None:
    usage = charged()
    usage.roll(11, 1)
    usage.close(10, 1, Estimate(1_000, 2), Estimate(1_500, 1))
    # Tokens over the estimate are charged now; the unused request of the closed minute is not refunded.
    assert used(usage) == (500, 0, 1_500, 1)
    assert open_now(usage) == (0, 0, 0, 0)


def test_open_now_is_a_copy() -> None:
    usage = charged()
    before = open_now(usage)
    usage.charge(10, 1, Estimate(1, 1))
    assert before == (1_000, 2, 1_000, 2)


def test_in_flight_and_overages_are_plain_counters() -> None:
    usage = TypeUsage()
    assert (usage.in_flight, usage.overages) == (0, 0)
    other = TypeUsage()
    assert other.open is not usage.open
    assert other.used is not usage.used


# ----- the jobs a type's slots count --------------------------------------------------------


def test_a_charge_counts_one_job_in_each_current_window() -> None:
    usage = charged()
    usage.charge(10, 1, Estimate(1_000, 2))
    assert usage.jobs == [2, 2]
    usage.charge(10, 1, Estimate(1_000, 2), -1)
    assert usage.jobs == [1, 1]


def test_a_job_of_the_last_minute_no_longer_counts_in_this_one() -> None:
    usage = charged()
    usage.roll(11, 1)
    assert usage.jobs == [0, 1]
    # Its close leaves the new minute's count alone.
    usage.close(10, 1, Estimate(1_000, 2), Estimate(1_000, 2))
    assert usage.jobs == [0, 0]


def test_a_close_in_its_windows_uncounts_the_job() -> None:
    usage = charged()
    usage.close(10, 1, Estimate(1_000, 2), None)
    assert usage.jobs == [0, 0]


def test_window_jobs_follow_the_windows_the_model_tracks() -> None:
    usage = charged()
    usage.roll(11, 1)
    usage.in_flight = 1
    assert usage.window_jobs(tracks_minute=True, tracks_day=True) == 0
    assert usage.window_jobs(tracks_minute=False, tracks_day=True) == 1
    # A concurrency-only model has no windows: every job in flight counts.
    usage.in_flight = 3
    assert usage.window_jobs(tracks_minute=False, tracks_day=False) == 3


def test_input_and_output_tokens_open_close_and_overrun_in_the_minute() -> None:
    usage = TypeUsage()
    usage.charge(10, 1, Estimate(1_000, 1, 700, 300))
    assert usage.open_now() == (1_000, 1, 1_000, 1, 700, 300)
    usage.close(10, 1, Estimate(1_000, 1, 700, 300), Estimate(900, 1, 400, 500))
    assert usage.open_now() == (0, 0, 0, 0, 0, 0)
    assert tuple(usage.used) == (900, 1, 900, 1, 400, 500)
    # They are minute dimensions: a new minute clears them, and an overage lands in it.
    usage.charge(10, 1, Estimate(1_000, 1, 700, 300))
    usage.roll(11, 1)
    usage.close(10, 1, Estimate(1_000, 1, 700, 300), Estimate(1_000, 1, 600, 400))
    assert tuple(usage.used) == (0, 0, 1_900, 2, 0, 100)
