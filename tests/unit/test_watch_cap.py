"""--max-watch-streams: what the flag accepts, and the cap it sets."""

from __future__ import annotations

import argparse

import pytest

from rlcommon.watch_cap import MAX_WATCH_STREAMS, StreamCap, max_watch_streams


@pytest.mark.parametrize("value", ["1", "1000", str(MAX_WATCH_STREAMS)])
def test_a_whole_number_within_the_bound_is_taken(value: str) -> None:
    assert max_watch_streams(value) == int(value)


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "many", "", str(MAX_WATCH_STREAMS + 1)])
def test_anything_else_is_refused_saying_the_range(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="from 1 to 10,000"):
        max_watch_streams(value)


def test_past_the_cap_a_stream_is_refused_saying_the_flag_until_one_is_given_back() -> None:
    cap = StreamCap(2, "this instance")
    assert cap.take() is None and cap.take() is None
    refusal = cap.take()
    assert (
        refusal is not None
        and "already serves 2 WatchAllocation streams" in refusal
        and "--max-watch-streams" in refusal
    )
    assert cap.open == 2
    cap.give_back()
    assert cap.take() is None
