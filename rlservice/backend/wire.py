"""The ledger's replies and events.

A script call replies flat: seq, now, a count K, then K pairs of model and packed state, then one text
per operation, its fields one a line. States are 28 big-endian signed 64-bit integers, 36 for a model
that limits input or output tokens apart (lib.lua: pack(); Snapshot.from_reply reads them), packed
so that the script never formats a number. A closed lease is 25 lines: its id, then
the closed record (lib.lua: close_lease); refunds and overage are derived here from the estimate and
the actual usage. Job ids, model and job type names never hold a line break (the API and the
configuration refuse them), so a line is always one field."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..types import Outcome, Snapshot, Usage

CLOSED_LINES = 25
_STATE = struct.Struct(">28q")
_KINDS_STATE = struct.Struct(">36q")

State = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ClosedLease:
    """A lease's final record in the ledger; it answers every later Release of it."""

    lease_id: str
    owner: str
    model: str
    job_type: str
    job_id: str
    minute_window: int
    day_window: int
    estimate_tokens: int
    estimate_requests: int
    expires_at_ms: int
    outcome: Outcome
    same_window: bool
    expired: bool
    refunded_tokens: int
    refunded_requests: int
    overage_tokens: int
    overage_requests: int
    actual: Usage
    # The provider's word (feedback.lua): the pause the model was under after the release (Redis
    # ms, 0 for none) and the external usage the release charged.
    paused_until_ms: int = 0
    external_tokens: int = 0
    external_requests: int = 0
    closed_at_ms: int = 0
    # Estimated input and output tokens (0 unless the model limits them apart).
    estimate_input_tokens: int = 0
    estimate_output_tokens: int = 0

    @classmethod
    def from_lines(cls, f: Sequence[str], at: int = 0) -> ClosedLease:
        """The record whose first line (the lease id) is f[at]: owner, model, job type, windows,
        estimates, expiry, job id, outcome, same window, expired, refunded, tracked, the usage as
        reported (input, output, cached tokens, requests), the pause and the external tokens and
        requests charged, when it closed, and the estimated input and output tokens."""
        est_t, est_r = int(f[at + 6]), int(f[at + 7])
        outcome = Outcome(int(f[at + 10]))
        actual = Usage(int(f[at + 18]), int(f[at + 15]), int(f[at + 16]), int(f[at + 17]))
        if outcome is Outcome.FAILED_UNKNOWN_USAGE:
            dt, dr = 0, 0
        else:
            dt = actual.input_tokens + actual.output_tokens + actual.cached_tokens - est_t
            dr = actual.request_count - est_r
        # Only a window still open gives back what was not used; an overage counts wherever the
        # model has a window limit.
        refunded, tracked = f[at + 13] == "1", f[at + 14] == "1"
        return cls(
            lease_id=f[at],
            owner=f[at + 1],
            model=f[at + 2],
            job_type=f[at + 3],
            minute_window=int(f[at + 4]),
            day_window=int(f[at + 5]),
            estimate_tokens=est_t,
            estimate_requests=est_r,
            expires_at_ms=int(f[at + 8]),
            job_id=f[at + 9],
            outcome=outcome,
            same_window=f[at + 11] == "1",
            expired=f[at + 12] == "1",
            refunded_tokens=-dt if refunded and dt < 0 else 0,
            refunded_requests=-dr if refunded and dr < 0 else 0,
            overage_tokens=dt if tracked and dt > 0 else 0,
            overage_requests=dr if tracked and dr > 0 else 0,
            actual=actual,
            paused_until_ms=int(f[at + 19]),
            external_tokens=int(f[at + 20]),
            external_requests=int(f[at + 21]),
            closed_at_ms=int(f[at + 22]),
            estimate_input_tokens=int(f[at + 23]),
            estimate_output_tokens=int(f[at + 24]),
        )


@dataclass(frozen=True, slots=True)
class CallReply:
    """A script call's reply: the calling instance's state of every model the call touched (each
    made once, shared by the call's operations) and each operation's lines."""

    snapshots: dict[str, Snapshot]
    replies: list[list[str]]


def _layout(kinds: bool) -> struct.Struct:
    return _KINDS_STATE if kinds else _STATE


def parse_reply(raw: Sequence[Any]) -> CallReply:
    seq, now, count = int(raw[0]), int(raw[1]), int(raw[2])
    snapshots = {
        raw[3 + 2 * i].decode(): Snapshot.from_reply(
            seq, now, _layout(len(raw[4 + 2 * i]) > _STATE.size).unpack(raw[4 + 2 * i])
        )
        for i in range(count)
    }
    replies = [r.decode().split("\n") for r in raw[3 + 2 * count :]]
    return CallReply(snapshots, replies)


@dataclass(frozen=True, slots=True)
class Event:
    """What another instance's call (or none) published: lib.lua publish()."""

    kind: str
    seq: int
    owner: str | None
    states: dict[str, State]
    closed: list[ClosedLease]
    gone: list[str]


def parse_event(body: bytes) -> Event:
    """An event after its origin's line: kind, seq, owner, the states' models (each with whether its
    state has the input and output integers), the closed leases, the instances gone, one a line; then
    the packed states."""
    count = int(body.split(b"\n", 4)[3])
    head = body.split(b"\n", 4 + 2 * count)
    layouts = [_layout(flag == b"1") for flag in head[5 : 4 + 2 * count : 2]]
    end = len(body) - sum(layout.size for layout in layouts)
    f = body[:end].decode().split("\n")
    kind, seq, owner = f[0], int(f[1]), f[2]
    names = f[4 : 4 + 2 * count : 2]
    at = 4 + 2 * count
    closed = []
    for _ in range(int(f[at])):
        closed.append(ClosedLease.from_lines(f, at + 1))
        at += CLOSED_LINES
    at += 1
    gone = list(f[at + 1 : at + 1 + int(f[at])])
    states = {}
    for name, layout in zip(names, layouts, strict=True):
        states[name] = layout.unpack_from(body, end)
        end += layout.size
    return Event(kind, seq, None if owner == "-" else owner, states, closed, gone)
