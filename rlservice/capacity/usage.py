"""Local per job type and model accounting in the current windows: open estimates and usage."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..types import MINUTE_DIMS


@dataclass(slots=True)
class TypeUsage:
    """open: estimates of the type's open leases acquired in the current windows (what its share
    is checked against); used: those estimates plus the usage of its leases settled in the current
    windows (what GetAllocation reports). Both in RATE_DIMS order. jobs: the type's open leases
    acquired in the current minute and day windows, what its slots count: a lease from a closed
    window still runs but no longer uses this window's capacity."""

    minute_window: int = 0
    day_window: int = 0
    open: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    used: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    jobs: list[int] = field(default_factory=lambda: [0, 0])
    in_flight: int = 0
    overages: int = 0

    def roll(self, minute_window: int, day_window: int) -> None:
        """Moves to newer windows: what belonged to closed ones no longer counts."""
        if minute_window > self.minute_window:
            self.minute_window = minute_window
            self.open[0] = self.open[1] = self.used[0] = self.used[1] = self.jobs[0] = 0
        if day_window > self.day_window:
            self.day_window = day_window
            self.open[2] = self.open[3] = self.used[2] = self.used[3] = self.jobs[1] = 0

    def _current(self, i: int, minute_window: int, day_window: int) -> bool:
        return (minute_window == self.minute_window) if i in MINUTE_DIMS else (day_window == self.day_window)

    def charge(self, minute_window: int, day_window: int, tokens: int, requests: int, jobs: int = 1) -> None:
        """Opens (or, negative, withdraws) an estimate in the windows given if they are current."""
        self.roll(minute_window, day_window)
        for i, amount in enumerate((tokens, requests, tokens, requests)):
            if self._current(i, minute_window, day_window):
                self.open[i] += amount
                self.used[i] += amount
        self._count(minute_window, day_window, jobs)

    def _count(self, minute_window: int, day_window: int, jobs: int) -> None:
        if minute_window == self.minute_window:
            self.jobs[0] += jobs
        if day_window == self.day_window:
            self.jobs[1] += jobs

    def window_jobs(self, tracks_minute: bool, tracks_day: bool) -> int:
        """The jobs a model's slots count: those of its minute window, else of its day window, else
        (concurrency only) all in flight."""
        if tracks_minute:
            return self.jobs[0]
        return self.jobs[1] if tracks_day else self.in_flight

    def close(
        self, minute_window: int, day_window: int, estimate: tuple[int, int], actual: tuple[int, int] | None
    ) -> None:
        """A lease of these windows closed, at its actual usage (None: at its estimate), as the
        ledger settles it: in its windows while they are current; an overage in a closed window goes
        to the current one instead."""
        self.roll(minute_window, day_window)
        est = (estimate[0], estimate[1], estimate[0], estimate[1])
        act = est if actual is None else (actual[0], actual[1], actual[0], actual[1])
        for i in range(4):
            delta = act[i] - est[i]
            if self._current(i, minute_window, day_window):
                self.open[i] -= est[i]
                self.used[i] += delta
            elif delta > 0:
                self.used[i] += delta
        self._count(minute_window, day_window, -1)

    def open_now(self) -> tuple[int, int, int, int]:
        o = self.open
        return (o[0], o[1], o[2], o[3])
