"""Plain data: the ledger's reply layout and the small value types."""

from __future__ import annotations

from rlservice.types import RATE_DIMS, Estimate, ModelLimits, Snapshot, Usage

from .helpers import limits


def test_snapshot_follows_the_ledger_state_layout() -> None:
    # {minute_window, day_window, n,
    #  minute: settled t/r, open t/r, own open t/r, own settled t/r, day: the same,
    #  inflight_total, own_inflight, waiters, own_waiting, paused until, minute external t/r,
    #  outside rate t/r, for a model that limits them, minute input/output tokens: settled i/o, open i/o, own open
    #  i/o, own settled i/o},
    # as pack() in lib.lua builds it.
    state = [100, 200, 3, 11, 12, 13, 14, 15, 16, 17, 18, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 2, 1, 9000, 41, 42]
    state += [43, 44, 51, 52, 53, 54, 55, 56, 57, 58]
    snap = Snapshot.from_reply(7, 1_000, state)
    assert (snap.seq, snap.now_ms) == (7, 1_000)
    assert (snap.minute_window, snap.day_window, snap.instances) == (100, 200, 3)
    assert snap.settled == (11, 12, 21, 22, 51, 52)
    assert snap.open == (13, 14, 23, 24, 53, 54)
    assert snap.own_open == (15, 16, 25, 26, 55, 56)
    assert snap.own_settled == (17, 18, 27, 28, 57, 58)
    assert (snap.inflight_total, snap.own_inflight) == (31, 32)
    assert (snap.waiters, snap.own_waiting) == (2, 1)
    assert (snap.paused_until_ms, snap.external, snap.outside) == (9000, (41, 42), (43, 44))
    # Without the last 8, input and output tokens read 0.
    plain = Snapshot.from_reply(7, 1_000, state[:28])
    assert (plain.settled, plain.own_settled) == ((11, 12, 21, 22, 0, 0), (17, 18, 27, 28, 0, 0))


def test_empty_snapshot_is_one_idle_instance() -> None:
    snap = Snapshot.empty()
    assert snap.instances == 1
    assert snap.settled == snap.open == snap.own_open == (0,) * len(RATE_DIMS)
    assert (snap.inflight_total, snap.own_inflight, snap.seq) == (0, 0, 0)
    assert (snap.waiters, snap.own_waiting) == (0, 0)
    assert not snap.others_waiting


def test_others_waiting_leaves_out_the_instance_itself() -> None:
    base = [0, 0, 2] + [0] * 18
    assert not Snapshot.from_reply(1, 0, [*base, 1, 1, 0, 0, 0, 0, 0]).others_waiting
    assert Snapshot.from_reply(1, 0, [*base, 1, 0, 0, 0, 0, 0, 0]).others_waiting
    assert Snapshot.from_reply(1, 0, [*base, 2, 1, 0, 0, 0, 0, 0]).others_waiting
    assert not Snapshot.from_reply(1, 0, [*base, 0, 0, 0, 0, 0, 0, 0]).others_waiting


def test_which_windows_a_model_tracks() -> None:
    assert limits(tpm=1).tracks_minute and not limits(tpm=1).tracks_day
    assert limits(rpd=1).tracks_day and not limits(rpd=1).tracks_minute
    assert limits(rpm=1, tpd=1).tracks_minute and limits(rpm=1, tpd=1).tracks_day
    concurrent_only = ModelLimits(rates=(None, None, None, None), max_concurrent=5)
    assert not concurrent_only.tracks_minute and not concurrent_only.tracks_day
    # Input and output tokens are limited per minute.
    assert limits(itpm=1).tracks_minute and limits(otpm=1).token_kinds and not limits(tpm=1).token_kinds


def test_limits_left_off_at_the_end_are_not_limited() -> None:
    assert ModelLimits(rates=(100, 5), max_concurrent=None).rates == (100, 5, None, None, None, None)


def test_estimate_per_dimension() -> None:
    assert Estimate(tokens=10_000, requests=3).per_dim() == (10_000, 3, 10_000, 3, 0, 0)
    assert Estimate(10_000, 3, input_tokens=7_000, output_tokens=3_000).per_dim() == (
        10_000,
        3,
        10_000,
        3,
        7_000,
        3_000,
    )


def test_tokens_are_input_plus_output_plus_cached() -> None:
    assert Usage(request_count=1, input_tokens=1_200, output_tokens=300, cached_tokens=50).tokens == 1_550


def test_input_tokens_count_the_cached_ones_unless_the_model_says_not() -> None:
    usage = Usage(request_count=1, input_tokens=1_200, output_tokens=300, cached_tokens=50)
    assert usage.spent(cached_as_input=True) == Estimate(1_550, 1, 1_250, 300)
    assert usage.spent(cached_as_input=False) == Estimate(1_550, 1, 1_200, 300)
