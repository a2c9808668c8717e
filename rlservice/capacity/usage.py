"""Local per job type and model accounting in the current windows: open estimates and usage."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..types import DAY_DIMS, DIMS, MINUTE_DIMS, NO_AMOUNTS, Amounts, Estimate


@dataclass(slots=True)
class TypeUsage:
    """open: estimates of the type's open leases acquired in the current windows (what its share
    is checked against); used: those estimates plus the usage of its leases settled in the current
    windows (what GetAllocation reports). Both in RATE_DIMS order. jobs: the type's open leases
    acquired in the current minute and day windows, what its slots count: a lease from a closed
    window still runs but no longer uses this window's capacity."""

    minute_window: int = 0
    day_window: int = 0
    open: list[int] = field(default_factory=lambda: list(NO_AMOUNTS))
    used: list[int] = field(default_factory=lambda: list(NO_AMOUNTS))
    jobs: list[int] = field(default_factory=lambda: [0, 0])
    in_flight: int = 0
    overages: int = 0

    def roll(self, minute_window: int, day_window: int) -> None:
        """Moves to newer windows: what belonged to closed ones no longer counts."""
        if minute_window > self.minute_window:
            self.minute_window = minute_window
            self._clear(MINUTE_DIMS)
            self.jobs[0] = 0
        if day_window > self.day_window:
            self.day_window = day_window
            self._clear(DAY_DIMS)
            self.jobs[1] = 0

    def _clear(self, dims: tuple[int, ...]) -> None:
        for i in dims:
            self.open[i] = self.used[i] = 0

    def _current(self, i: int, minute_window: int, day_window: int) -> bool:
        if DIMS[i].per_day:
            return day_window == self.day_window
        return minute_window == self.minute_window

    def charge(self, minute_window: int, day_window: int, estimate: Estimate, jobs: int = 1) -> None:
        """Opens jobs leases of this estimate (withdraws them when negative) in the windows given, if
        they are current."""
        self.roll(minute_window, day_window)
        for i, amount in enumerate(estimate.per_dim()):
            if self._current(i, minute_window, day_window):
                self.open[i] += jobs * amount
                self.used[i] += jobs * amount
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

    def close(self, minute_window: int, day_window: int, estimate: Estimate, actual: Estimate | None) -> None:
        """A lease of these windows closed, at its actual usage per kind (None: at its estimate), as
        the ledger settles it: in its windows while they are current; an overage in a closed window
        goes to the current one instead."""
        self.roll(minute_window, day_window)
        est = estimate.per_dim()
        act = est if actual is None else actual.per_dim()
        for i in range(len(DIMS)):
            delta = act[i] - est[i]
            if self._current(i, minute_window, day_window):
                self.open[i] -= est[i]
                self.used[i] += delta
            elif delta > 0:
                self.used[i] += delta
        self._count(minute_window, day_window, -1)

    def open_now(self) -> Amounts:
        return tuple(self.open)
