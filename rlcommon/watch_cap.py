"""How many WatchAllocation streams a server serves at once (--max-watch-streams), for rlservice and rlproxy.

Every open stream costs its server one write per message, on the event loop that also answers
Acquire and Release: past the cap a stream is refused with RESOURCE_EXHAUSTED, before it costs anything.
"""

from __future__ import annotations

import argparse
from typing import Final

# docs/performance.md (make bench-watch): at this many streams, each at min_interval_ms 50 and all
# reading, one instance's Acquire + Release p50 and p99 stay within 1.5x and 2x of none.
DEFAULT_MAX_WATCH_STREAMS: Final = 1000
FLAG: Final = "--max-watch-streams"
# Past this, the write budget below leaves each stream less than a message every 5 s while each
# still holds its memory: more watchers should share streams through rlproxy.
MAX_WATCH_STREAMS: Final = 10_000
# The most stream messages a server writes a second, across all its streams (rlcommon.write_budget):
# about 37 µs of event loop each (docs/performance.md), so at most about 7 % of the loop: at 4 000 the
# cap's streams took Acquire + Release p50 to 1.6x in one run of make bench-watch of two.
WRITES_PER_S: Final = 2000


def max_watch_streams(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= MAX_WATCH_STREAMS:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a whole number of streams from 1 to {MAX_WATCH_STREAMS:,}; past that, "
            "watch through rlproxy, which holds one stream to the instance for all its clients"
        )
    return int(value)


def add_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        FLAG,
        type=max_watch_streams,
        default=DEFAULT_MAX_WATCH_STREAMS,
        metavar="N",
        help=f"WatchAllocation streams {what} serves at once; the next is refused with RESOURCE_EXHAUSTED "
        f"(default {DEFAULT_MAX_WATCH_STREAMS})",
    )


class StreamCap:
    """Counts the open streams; `server` names the process in the refusal ("this instance")."""

    __slots__ = ("_server", "limit", "open")

    def __init__(self, limit: int, server: str) -> None:
        self.limit = limit
        self.open = 0
        self._server = server

    def take(self) -> str | None:
        """Takes a slot, or says why there is none (the slot must then not be given back)."""
        if self.open >= self.limit:
            return (
                f"{self._server} already serves {self.limit} WatchAllocation streams, its {FLAG}: close streams "
                f"you no longer read, or start it with a higher {FLAG}"
            )
        self.open += 1
        return None

    def give_back(self) -> None:
        self.open -= 1
