"""The ledger's text replies and events: fields one a line, states as comma-separated integers,
closed leases as 20 lines (the job id last). Job ids, model and job type names never hold a line
break (the API and the configuration refuse them), so a line is always one field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..types import Outcome, Snapshot, Usage

CLOSED_LINES = 20


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
    outcome: Outcome
    same_window: bool
    expired: bool
    refunded_tokens: int
    refunded_requests: int
    overage_tokens: int
    overage_requests: int
    actual: Usage

    @classmethod
    def from_lines(cls, f: Sequence[str], at: int = 0) -> ClosedLease:
        """The record whose first line is f[at] (lib.lua: close_lease, closed_text)."""
        return cls(
            lease_id=f[at],
            owner=f[at + 1],
            model=f[at + 2],
            job_type=f[at + 3],
            minute_window=int(f[at + 4]),
            day_window=int(f[at + 5]),
            estimate_tokens=int(f[at + 6]),
            estimate_requests=int(f[at + 7]),
            outcome=Outcome(int(f[at + 8])),
            same_window=f[at + 9] == "1",
            expired=f[at + 10] == "1",
            refunded_tokens=int(f[at + 11]),
            refunded_requests=int(f[at + 12]),
            overage_tokens=int(f[at + 13]),
            overage_requests=int(f[at + 14]),
            actual=Usage(int(f[at + 18]), int(f[at + 15]), int(f[at + 16]), int(f[at + 17])),
            job_id=f[at + 19],
        )


def snapshot(seq: str | int, now: str | int, state: str) -> Snapshot:
    return Snapshot.from_reply(int(seq), int(now), [int(v) for v in state.split(",")])


def states(f: Sequence[str], at: int) -> tuple[dict[str, str], int]:
    """A count, then model and state lines; returns {model: state text} and the next position."""
    count = int(f[at])
    out = {f[at + 1 + 2 * i]: f[at + 2 + 2 * i] for i in range(count)}
    return out, at + 1 + 2 * count


@dataclass(frozen=True, slots=True)
class Event:
    """What another instance's call (or none) published: lib.lua publish()."""

    kind: str
    seq: int
    owner: str | None
    states: dict[str, str]
    closed: list[ClosedLease]
    gone: list[str]


def parse_event(f: Sequence[str]) -> Event:
    """An event's lines after its origin."""
    kind, seq, owner = f[0], int(f[1]), f[2]
    found, at = states(f, 3)
    closed = []
    for _ in range(int(f[at])):
        closed.append(ClosedLease.from_lines(f, at + 1))
        at += CLOSED_LINES
    at += 1
    gone = list(f[at + 1 : at + 1 + int(f[at])])
    return Event(kind, seq, None if owner == "-" else owner, found, closed, gone)
