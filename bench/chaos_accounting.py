"""What the chaos run's clients saw, kept so that it can be checked against the limits afterwards.

The clients' view of a window is a lower bound of the ledger's at every moment: a grant is counted
from when its answer arrived (the ledger had it earlier), a refund and a freed concurrency slot from
when the Release was sent (the ledger applies them later), and a lease whose Release never got
through is freed in this view at once, while the ledger holds it until it expires or its instance is
removed. A Release that failed may still have been applied (an instance killed after its script
ran, a deadline that passed on the way back), so it counts here as the largest refund it could have
brought, from when it was sent. So a peak above a limit in this view is a real breach, never an
artefact of timing or of an answer that was lost.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import grpc

MINUTE_MS = 60_000
DAY_MS = 86_400_000

# Dimension name -> (window kind, index into the (tokens, requests) pair).
DIMENSIONS = {
    "tokens_per_minute": ("m", 0),
    "requests_per_minute": ("m", 1),
    "tokens_per_day": ("d", 0),
    "requests_per_day": ("d", 1),
}


def message_class(details: str) -> str:
    """The kind of an error message: ids, quoted names and numbers taken out, so that alike errors
    are counted together."""
    text = re.sub(r"'[^']*'", "'…'", details)
    text = re.sub(r"\S+/\S+", "…", text)
    # Instance ids, addresses, counts: any word with a digit in it.
    text = re.sub(r"[^\s,()]*\d[^\s,()]*", "N", text)
    return text[:110]


@dataclass
class Change:
    at: float
    tokens: int
    requests: int


@dataclass
class ClientView:
    # (model, kind, window) -> changes to what is committed in that window
    windows: dict[tuple[str, str, int], list[Change]] = field(default_factory=lambda: defaultdict(list))
    # model -> (time, +1 | -1) for leases held
    held: dict[str, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # (rpc, code, message kind) -> when each was answered, on the run's clock
    error_times: dict[tuple[str, str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    calls: Counter[str] = field(default_factory=Counter)
    grants: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)

    def granted(self, at: float, model: str, granted_at_ms: int, tokens: int, requests: int) -> tuple[int, int]:
        """Records a grant; returns its (minute, day) windows."""
        minute, day = granted_at_ms // MINUTE_MS, granted_at_ms // DAY_MS
        self.windows[(model, "m", minute)].append(Change(at, tokens, requests))
        self.windows[(model, "d", day)].append(Change(at, tokens, requests))
        self.held[model].append((at, 1))
        self.grants[model] += 1
        return minute, day

    def released(self, sent_at: float, model: str) -> None:
        """The lease's slot is free in this view from when its Release was sent, whatever came of it."""
        self.held[model].append((sent_at, -1))

    def refunded(
        self, sent_at: float, model: str, minute: int, day: int, same_window: bool, tokens: int, requests: int
    ) -> None:
        """A refund in the lease's windows. `same_window` false means the minute window had closed, so
        nothing came back to it; the day window is refunded whenever anything was."""
        if not tokens and not requests:
            return
        if same_window:
            self.windows[(model, "m", minute)].append(Change(sent_at, -tokens, -requests))
        self.windows[(model, "d", day)].append(Change(sent_at, -tokens, -requests))

    def error(self, at: float, rpc: str, code: grpc.StatusCode, details: str) -> None:
        key = (rpc, code.name, message_class(details))
        self.errors[key] += 1
        self.error_times[key].append(at)

    def peaks(self) -> dict[tuple[str, str, int], tuple[int, int]]:
        """(model, kind, window) -> the highest (tokens, requests) committed at any moment."""
        out = {}
        for key, changes in self.windows.items():
            tokens = requests = peak_t = peak_r = 0
            for change in sorted(changes, key=lambda c: c.at):
                tokens += change.tokens
                requests += change.requests
                peak_t, peak_r = max(peak_t, tokens), max(peak_r, requests)
            out[key] = (peak_t, peak_r)
        return out

    def peak_held(self) -> dict[str, int]:
        out = {}
        for model, moves in self.held.items():
            count = peak = 0
            # A release sent at the same instant as a grant arrived is counted first.
            for _, step in sorted(moves, key=lambda m: (m[0], m[1])):
                count += step
                peak = max(peak, count)
            out[model] = peak
        return out
