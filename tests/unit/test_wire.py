"""The ledger's reply and event formats, as lib.lua writes them."""

from __future__ import annotations

import struct
from pathlib import Path

from rlservice.backend.ledger import KINDS_AT, Ledger
from rlservice.backend.wire import ClosedLease, parse_event, parse_reply
from rlservice.types import Outcome, Usage

STATE = struct.Struct(">28q")
# A model that limits input or output tokens apart: 8 integers more.
KINDS_STATE = struct.Struct(">36q")


def closed_lines(
    outcome: int,
    actual: tuple[int, int, int, int],
    same: str = "1",
    refunded: str = "1",
    tracked: str = "1",
    provider: tuple[int, int, int] = (0, 0, 0),
    closed_at: int = 6_000_100,
) -> list[str]:
    """A closed record: id, owner, model, job type, windows, estimates (1000 tokens, 1 request),
    expiry, job id, outcome, same, expired, refunded, tracked, input, output, cached, requests,
    paused until, external tokens, external requests, closed at, estimated input and output tokens
    (600, 400)."""
    body = ["A/l1", "A", "gpt", "small", "100", "2", "1000", "1", "6000000", "job-1"]
    rest = (*actual, *provider, closed_at, 600, 400)
    return [*body, str(outcome), same, "0", refunded, tracked, *(str(v) for v in rest)]


def test_a_release_below_the_estimate_is_refunded() -> None:
    closed = ClosedLease.from_lines(closed_lines(1, (300, 200, 100, 1)))
    assert (closed.refunded_tokens, closed.refunded_requests) == (400, 0)
    assert (closed.overage_tokens, closed.overage_requests) == (0, 0)
    assert closed.actual == Usage(request_count=1, input_tokens=300, output_tokens=200, cached_tokens=100)
    assert (closed.lease_id, closed.owner, closed.model, closed.job_type, closed.job_id) == (
        "A/l1",
        "A",
        "gpt",
        "small",
        "job-1",
    )
    assert (closed.minute_window, closed.day_window, closed.estimate_tokens, closed.estimate_requests) == (
        100,
        2,
        1000,
        1,
    )
    assert (closed.estimate_input_tokens, closed.estimate_output_tokens, closed.expires_at_ms) == (600, 400, 6_000_000)


def test_an_overage_counts_even_when_the_window_has_closed() -> None:
    closed = ClosedLease.from_lines(closed_lines(2, (1500, 0, 0, 3), same="0", refunded="0"))
    assert closed.outcome is Outcome.FAILED_WITH_USAGE
    assert not closed.same_window
    assert (closed.overage_tokens, closed.overage_requests) == (500, 2)
    assert (closed.refunded_tokens, closed.refunded_requests) == (0, 0)


def test_a_closed_window_refunds_nothing_and_untracked_models_have_no_overage() -> None:
    late = ClosedLease.from_lines(closed_lines(1, (10, 0, 0, 1), same="0", refunded="0"))
    assert (late.refunded_tokens, late.overage_tokens) == (0, 0)
    untracked = ClosedLease.from_lines(closed_lines(1, (5000, 0, 0, 1), refunded="0", tracked="0"))
    assert (untracked.refunded_tokens, untracked.overage_tokens) == (0, 0)


def test_a_rate_limited_release_refunds_its_estimate_and_carries_the_providers_word() -> None:
    closed = ClosedLease.from_lines(closed_lines(4, (0, 0, 0, 0), provider=(1_795_000_020_000, 3000, 2)))
    assert closed.outcome is Outcome.RATE_LIMITED
    assert (closed.refunded_tokens, closed.refunded_requests) == (1000, 1)
    assert (closed.paused_until_ms, closed.external_tokens, closed.external_requests) == (1_795_000_020_000, 3000, 2)
    assert closed.closed_at_ms == 6_000_100


def test_unknown_usage_settles_the_estimate() -> None:
    closed = ClosedLease.from_lines(closed_lines(3, (0, 0, 0, 0)))
    assert closed.outcome is Outcome.FAILED_UNKNOWN_USAGE
    assert (closed.refunded_tokens, closed.overage_tokens, closed.overage_requests) == (0, 0, 0)


def test_a_call_reply_carries_states_then_one_text_per_operation() -> None:
    raw = [9, 1234, 2, b"gpt", STATE.pack(*range(28)), b"claude", KINDS_STATE.pack(*range(36))]
    call = parse_reply([*raw, b"granted\n5000", b"denied"])
    assert call.replies == [["granted", "5000"], ["denied"]]
    snap = call.snapshots.get("gpt")
    assert snap is not None
    assert (snap.seq, snap.now_ms, snap.minute_window, snap.own_waiting) == (9, 1234, 0, 22)
    assert (snap.paused_until_ms, snap.external, snap.outside) == (23, (24, 25), (26, 27))
    # A model without input and output limits has none of their integers: they read 0.
    assert (snap.settled[4:], snap.open[4:], snap.own_open[4:], snap.own_settled[4:]) == ((0, 0),) * 4
    kinds = call.snapshots.get("claude")
    assert kinds is not None
    assert (kinds.settled[4:], kinds.open[4:], kinds.own_open[4:], kinds.own_settled[4:]) == (
        (28, 29),
        (30, 31),
        (32, 33),
        (34, 35),
    )
    assert call.snapshots.get("other") is None


def test_an_event_keeps_its_packed_states_apart_from_its_lines() -> None:
    # Packed integers may hold line breaks (10 is "\n"): the states are read by their size, which
    # the line after each model's name gives (1: with input and output tokens).
    plain, kinds = (10,) * 28, (10,) * 36
    lines = ["change", "7", "B", "2", "claude", "1", "gpt", "0", "1", *closed_lines(1, (10, 0, 0, 1)), "1", "C"]
    body = ("\n".join(lines) + "\n").encode() + KINDS_STATE.pack(*kinds) + STATE.pack(*plain)
    event = parse_event(body)
    assert (event.kind, event.seq, event.owner, event.gone) == ("change", 7, "B", ["C"])
    assert event.states == {"claude": kinds, "gpt": plain}
    assert [c.lease_id for c in event.closed] == ["A/l1"]


def test_the_script_holds_the_token_kinds_part_inside_model() -> None:
    text = Ledger._script_text()
    kinds = (Path(__file__).resolve().parents[2] / "rlservice" / "backend" / "scripts" / "kinds.lua").read_text()
    assert KINDS_AT not in text
    assert text.count(kinds) == 1
    # Inside model(): made only for a model that limits input or output tokens apart.
    assert text.index("local function model(") < text.index(kinds) < text.index("local function flush_window(")
