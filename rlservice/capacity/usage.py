"""Local per job type and model accounting: committed in the current windows and in flight."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..types import MINUTE_DIMS


@dataclass(slots=True)
class TypeUsage:
    minute_window: int = 0
    day_window: int = 0
    committed: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    in_flight: int = 0
    overages: int = 0

    def roll(self, minute_window: int, day_window: int) -> None:
        """Moves to newer windows: what was committed in closed ones no longer counts."""
        if minute_window > self.minute_window:
            self.minute_window = minute_window
            self.committed[0] = self.committed[1] = 0
        if day_window > self.day_window:
            self.day_window = day_window
            self.committed[2] = self.committed[3] = 0

    def charge(self, minute_window: int, day_window: int, tokens: int, requests: int) -> None:
        """Adds to the windows given if they are the current ones; closed windows are left alone."""
        self.roll(minute_window, day_window)
        for i, amount in enumerate((tokens, requests, tokens, requests)):
            window = minute_window if i in MINUTE_DIMS else day_window
            current = self.minute_window if i in MINUTE_DIMS else self.day_window
            if window == current:
                self.committed[i] += amount

    def settle(self, minute_window: int, day_window: int, tokens: int, requests: int) -> None:
        """Actual minus estimate at release, as the ledger applies it: in the lease's windows while
        they are current; an overage in a closed window goes to the current one instead."""
        self.roll(minute_window, day_window)
        for i, delta in enumerate((tokens, requests, tokens, requests)):
            window = minute_window if i in MINUTE_DIMS else day_window
            current = self.minute_window if i in MINUTE_DIMS else self.day_window
            if window == current or delta > 0:
                self.committed[i] += delta

    def snapshot(self) -> tuple[int, int, int, int]:
        c = self.committed
        return (c[0], c[1], c[2], c[3])
