"""Reads the ledger straight from Redis, as the tests and the chaos run check it from outside the
instances. The key layout is the scripts' (rlservice/backend/scripts/lib.lua): this module is the
one place outside them that knows it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis

from rlservice.backend.wire import ClosedLease

MINUTE_MS = 60_000
DAY_MS = 86_400_000


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


@dataclass(frozen=True)
class LedgerView:
    instances: list[str]
    models: list[str]
    # model -> in-flight count across all instances, as the ledger's total holds it
    in_flight: dict[str, int]
    # model -> the per-instance in-flight counts added up (must equal the total)
    in_flight_by_instance: dict[str, int]
    open_leases: list[str]


class Ledger:
    def __init__(self, client: redis.Redis, prefix: str = "rl") -> None:
        self._r = client
        self._p = "{" + prefix + "}"

    def _key(self, *parts: str) -> str:
        return ":".join((self._p, *parts))

    def instances(self) -> list[str]:
        members = cast(list[bytes], self._r.zrange(self._key("instances"), 0, -1))
        return [_text(m) for m in members]

    def models(self) -> list[str]:
        return sorted(_text(m) for m in cast(set[bytes], self._r.smembers(self._key("models"))))

    def in_flight_counts(self, model: str) -> dict[str, int]:
        """In flight on a model: in total ('_') and per instance."""
        fields = {_text(k): _text(v) for k, v in self._r.hgetall(self._key("model", model)).items()}
        # The model's hash also holds its limits, its window mode (with its input and output token
        # limits), a provider's pause and which instances have waiters ('w', 'w:I').
        others = ("tpm", "rpm", "tpd", "rpd", "conc", "roll", "pu", "w")
        return {k: int(v) for k, v in fields.items() if k not in others and not k.startswith("w:")}

    def in_flight(self, model: str) -> tuple[int, int]:
        """(the total, the per-instance counts added up)."""
        counts = self.in_flight_counts(model)
        total = counts.pop("_", 0)
        return total, sum(counts.values())

    def open_leases(self) -> list[str]:
        """Leases not closed yet (a closed one is kept a while to answer a repeated Release): an open
        lease's record starts with the line `o` (`k` on a model that limits input or output tokens
        apart)."""
        out = []
        for key in self._r.scan_iter(match=self._key("lease", "*"), count=1000):
            record = cast(bytes | None, self._r.get(key))
            if record is not None and record.startswith((b"o\n", b"k\n")):
                out.append(_text(key).split(":lease:", 1)[1])
        return out

    def closed_leases(self, model: str) -> list[ClosedLease]:
        """The model's closed leases the ledger still keeps (an hour after they closed)."""
        out = []
        for key in self._r.scan_iter(match=self._key("lease", "*"), count=1000):
            record = cast(bytes | None, self._r.get(key))
            if record is not None and record.startswith(b"c\n"):
                lease_id = _text(key).split(":lease:", 1)[1]
                lease = ClosedLease.from_lines([lease_id, *record.decode().split("\n")[1:]])
                if lease.model == model:
                    out.append(lease)
        return out

    def committed(self, model: str, window: int, kind: str = "m") -> tuple[int, int]:
        """(tokens, requests) committed in one minute ("m") or day ("d") window, settled and open."""
        values = self._r.hmget(self._key("w", model, kind, str(window)), ["st", "ot", "sr", "or"])
        st, ot, sr, open_r = (int(v or 0) for v in values)
        return st + ot, sr + open_r

    def committed_kinds(self, model: str, window: int) -> tuple[int, int]:
        """(input, output) tokens committed in one minute window of a model that limits them apart,
        settled and open."""
        values = self._r.hmget(self._key("w", model, "m", str(window)), ["si", "oi", "so", "oo"])
        si, oi, so, oo = (int(v or 0) for v in values)
        return si + oi, so + oo

    def now_ms(self) -> int:
        secs, micros = self._r.time()
        return int(secs) * 1000 + int(micros) // 1000

    def view(self) -> LedgerView:
        models = self.models()
        flights = {m: self.in_flight(m) for m in models}
        return LedgerView(
            instances=self.instances(),
            models=models,
            in_flight={m: f[0] for m, f in flights.items()},
            in_flight_by_instance={m: f[1] for m, f in flights.items()},
            open_leases=self.open_leases(),
        )
