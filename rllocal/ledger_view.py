"""Reads the ledger straight from Redis, as the tests and the chaos run check it from outside the
instances. The key layout is the scripts' (rlservice/backend/scripts/lib.lua): this module is the
one place outside them that knows it. On a Redis Cluster (rlservice/backend/ledgers.py) each model
is a ledger of its own under {PREFIX:MODEL}; what this view reports across models (instances,
open leases) is gathered from all of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis
from redis.cluster import RedisCluster

from rlservice.backend.ledgers import cluster_prefix
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


def ledger_prefix(prefix: str, model: str, cluster: bool) -> str:
    """The text of the hash tag the model's keys are under."""
    return cluster_prefix(prefix, model) if cluster else prefix


class Ledger:
    """`cluster`: the client is a RedisCluster's and the ledger is one per model."""

    def __init__(self, client: redis.Redis | RedisCluster, prefix: str = "rl", cluster: bool = False) -> None:
        self._r = client
        self._prefix = prefix
        self._cluster = cluster

    def key(self, model: str, *parts: str) -> str:
        """A key of the ledger that holds the model."""
        return ":".join(("{" + ledger_prefix(self._prefix, model, self._cluster) + "}", *parts))

    def _tags(self) -> list[str]:
        """The hash tags of every ledger."""
        if not self._cluster:
            return ["{" + self._prefix + "}"]
        return [self.key(m) for m in self.models()]

    def instances(self) -> list[str]:
        """In the order of their heartbeats on one Redis; sorted, every model's together, on a cluster."""
        lists = [cast(list[bytes], self._r.zrange(tag + ":instances", 0, -1)) for tag in self._tags()]
        if not self._cluster:
            return [_text(m) for m in lists[0]]
        return sorted({_text(m) for members in lists for m in members})

    def models(self) -> list[str]:
        if not self._cluster:
            return sorted(_text(m) for m in cast(set[bytes], self._r.smembers("{" + self._prefix + "}:models")))
        pattern = "{" + cluster_prefix(self._prefix, "*") + "}:models"
        names: set[str] = set()
        for key in self._r.scan_iter(match=pattern, count=1000):
            names.update(_text(m) for m in cast(set[bytes], self._r.smembers(key)))
        return sorted(names)

    def in_flight_counts(self, model: str) -> dict[str, int]:
        """In flight on a model: in total ('_') and per instance."""
        fields = {_text(k): _text(v) for k, v in self._r.hgetall(self.key(model, "model", model)).items()}
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
        for key in self._lease_keys():
            record = cast(bytes | None, self._r.get(key))
            if record is not None and record.startswith((b"o\n", b"k\n")):
                out.append(_text(key).split(":lease:", 1)[1])
        return out

    def _lease_keys(self, model: str | None = None) -> list[bytes]:
        """The lease records of every ledger, or of the one holding the model."""
        tags = self._tags() if model is None else [self.key(model)]
        return [k for tag in tags for k in self._r.scan_iter(match=tag + ":lease:*", count=1000)]

    def closed_leases(self, model: str) -> list[ClosedLease]:
        """The model's closed leases the ledger still keeps (an hour after they closed)."""
        out = []
        for key in self._lease_keys(model):
            record = cast(bytes | None, self._r.get(key))
            if record is not None and record.startswith(b"c\n"):
                lease_id = _text(key).split(":lease:", 1)[1]
                lease = ClosedLease.from_lines([lease_id, *record.decode().split("\n")[1:]])
                if lease.model == model:
                    out.append(lease)
        return out

    def committed(self, model: str, window: int, kind: str = "m") -> tuple[int, int]:
        """(tokens, requests) committed in one minute ("m") or day ("d") window, settled and open."""
        values = self._r.hmget(self.key(model, "w", model, kind, str(window)), ["st", "ot", "sr", "or"])
        st, ot, sr, open_r = (int(v or 0) for v in values)
        return st + ot, sr + open_r

    def committed_kinds(self, model: str, window: int) -> tuple[int, int]:
        """(input, output) tokens committed in one minute window of a model that limits them apart,
        settled and open."""
        values = self._r.hmget(self.key(model, "w", model, "m", str(window)), ["si", "oi", "so", "oo"])
        si, oi, so, oo = (int(v or 0) for v in values)
        return si + oi, so + oo

    def time(self) -> tuple[int, int]:
        """Redis time: seconds and microseconds (a cluster's nodes share the host's clock here)."""
        secs, micros = self._r.time()
        return int(secs), int(micros)

    def now_ms(self) -> int:
        secs, micros = self.time()
        return secs * 1000 + micros // 1000

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
