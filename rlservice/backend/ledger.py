"""Calls the ledger's Lua scripts by SHA and turns their replies into plain data."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import NoScriptError
from redis.exceptions import RedisError as RedisError

from ..types import ModelLimits, Outcome, Snapshot, Usage

SCRIPTS = ("acquire", "release", "expire", "extend", "register", "heartbeat", "unregister")


class LedgerUnavailable(Exception):
    """Redis cannot be reached or failed; callers fail closed."""


class NotRegistered(Exception):
    """The ledger no longer knows this instance (it was found stale); it must register again."""


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
    def from_json(cls, raw: str | bytes | dict[str, Any]) -> ClosedLease:
        d = raw if isinstance(raw, dict) else json.loads(raw)
        return cls(
            lease_id=d["id"],
            owner=d["i"],
            model=d["m"],
            job_type=d["j"],
            job_id=d["jid"],
            minute_window=int(d["mw"]),
            day_window=int(d["dw"]),
            estimate_tokens=int(d["t"]),
            estimate_requests=int(d["r"]),
            outcome=Outcome(int(d["o"])),
            same_window=bool(d["same"]),
            expired=bool(d["expired"]),
            refunded_tokens=int(d["rt"]),
            refunded_requests=int(d["rr"]),
            overage_tokens=int(d["ot"]),
            overage_requests=int(d["or"]),
            actual=Usage(int(d["req"]), int(d["in"]), int(d["out"]), int(d["cached"])),
        )


@dataclass(frozen=True, slots=True)
class OpenLease:
    """An open lease as the ledger holds it (for idempotent Acquire across instances)."""

    lease_id: str
    owner: str
    model: str
    job_type: str
    minute_window: int
    day_window: int
    estimate_tokens: int
    estimate_requests: int
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class AcquireReply:
    status: str  # granted | existing | denied
    snapshot: Snapshot
    expires_at_ms: int = 0
    existing: OpenLease | None = None


@dataclass(frozen=True, slots=True)
class ReleaseReply:
    """status: released (now) | expired (closed by its expiry now) | closed (earlier) |
    extended (its expiry moved; nothing closed) | unknown."""

    status: str
    closed: ClosedLease | None = None
    snapshot: Snapshot | None = None
    expires_at_ms: int = 0


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _states(seq: int, now: int, pairs: list[list[Any]]) -> dict[str, Snapshot]:
    return {_text(model): Snapshot.from_reply(seq, now, state) for model, state in pairs}


def limits_json(models: dict[str, ModelLimits]) -> str:
    return json.dumps(
        {
            name: {
                "tpm": lim.rates[0] or 0,
                "rpm": lim.rates[1] or 0,
                "tpd": lim.rates[2] or 0,
                "rpd": lim.rates[3] or 0,
                "conc": lim.max_concurrent or 0,
            }
            for name, lim in models.items()
        }
    )


def _ignore(script: str, seconds: float) -> None:
    pass


class Ledger:
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        instance_id: str,
        stale_after_ms: int,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        """`observe` hears each script call's name and duration in seconds, failed calls included."""
        self._observe = observe or _ignore
        # redis-py leaves execute_command unannotated.
        self._exec = cast(Callable[..., Awaitable[Any]], redis.execute_command)
        self._key = "{" + prefix + "}"
        self.channel = self._key + ":events"
        self.instance_id = instance_id
        self._stale = stale_after_ms
        self._source = {name: self._script_text(name) for name in SCRIPTS}
        self._sha: dict[str, str] = {}

    @staticmethod
    def _script_text(name: str) -> str:
        folder = resources.files(__package__).joinpath("scripts")
        return folder.joinpath("lib.lua").read_text() + "\n" + folder.joinpath(f"{name}.lua").read_text()

    async def load(self) -> None:
        for name, text in self._source.items():
            self._sha[name] = _text(await self._call_redis("SCRIPT", "LOAD", text))

    async def _call_redis(self, *args: Any) -> Any:
        try:
            return await self._exec(*args)
        except (RedisError, OSError) as e:
            raise LedgerUnavailable(f"redis: {e}") from e

    async def _run(self, name: str, *args: Any) -> tuple[str, list[Any]]:
        """Runs a script; returns its status (the reply's first element, decoded) and the reply."""
        started = time.perf_counter()
        try:
            try:
                reply = await self._exec("EVALSHA", self._sha[name], 1, self._key, *args)
            except NoScriptError:
                # Redis restarted or flushed its script cache: load once more and retry.
                await self.load()
                reply = await self._exec("EVALSHA", self._sha[name], 1, self._key, *args)
        except (RedisError, OSError) as e:
            raise LedgerUnavailable(f"redis: {e}") from e
        finally:
            self._observe(name, time.perf_counter() - started)
        status = _text(reply[0])
        if status == "unregistered":
            raise NotRegistered(self.instance_id)
        return status, reply

    async def register(self, models: dict[str, ModelLimits]) -> dict[str, Snapshot]:
        _, r = await self._run("register", self.instance_id, self._stale, limits_json(models))
        return _states(int(r[1]), int(r[2]), r[3])

    async def heartbeat(self) -> dict[str, Snapshot]:
        _, r = await self._run("heartbeat", self.instance_id, self._stale)
        return _states(int(r[1]), int(r[2]), r[3])

    async def unregister(self) -> None:
        await self._run("unregister", self.instance_id)

    async def acquire(
        self,
        model: str,
        job_id: str,
        job_type: str,
        lease_id: str,
        tokens: int,
        requests: int,
        ttl_ms: int,
        peek: bool,
    ) -> AcquireReply:
        status, r = await self._run(
            "acquire",
            self.instance_id,
            model,
            job_id,
            job_type,
            lease_id,
            tokens,
            requests,
            ttl_ms,
            self._stale,
            "1" if peek else "0",
        )
        if status == "unknown_model":
            raise LedgerUnavailable(f"the ledger does not know model {model!r}")
        snap = Snapshot.from_reply(int(r[1]), int(r[2]), r[3])
        if status == "granted":
            return AcquireReply(status, snap, expires_at_ms=int(r[4]))
        if status == "existing":
            d = json.loads(r[4])
            lease = OpenLease(
                lease_id=_text(r[5]),
                owner=d["i"],
                model=d["m"],
                job_type=d["j"],
                minute_window=int(d["mw"]),
                day_window=int(d["dw"]),
                estimate_tokens=int(d["t"]),
                estimate_requests=int(d["r"]),
                expires_at_ms=int(d["x"]),
            )
            return AcquireReply(status, snap, expires_at_ms=lease.expires_at_ms, existing=lease)
        return AcquireReply(status, snap)

    async def release(self, lease_id: str, outcome: Outcome, usage: Usage) -> ReleaseReply:
        status, r = await self._run(
            "release",
            lease_id,
            int(outcome),
            usage.input_tokens,
            usage.output_tokens,
            usage.cached_tokens,
            usage.request_count,
            self._stale,
            self.instance_id,
        )
        return self._closing_reply(status, r)

    async def expire(self, lease_id: str) -> ReleaseReply:
        status, r = await self._run("expire", lease_id, self.instance_id)
        if status == "extended":
            return ReleaseReply("extended", expires_at_ms=int(r[1]))
        return self._closing_reply(status, r)

    @staticmethod
    def _closing_reply(status: str, r: list[Any]) -> ReleaseReply:
        if status == "unknown":
            return ReleaseReply(status)
        if status == "closed":
            return ReleaseReply(status, closed=ClosedLease.from_json(r[1]))
        snap = Snapshot.from_reply(int(r[1]), int(r[2]), r[3])
        return ReleaseReply(status, closed=ClosedLease.from_json(r[4]), snapshot=snap)

    async def extend(self, lease_id: str, ttl_ms: int) -> tuple[str, int]:
        """Returns (status, expires_at_ms); status is extended, closed or unknown."""
        status, r = await self._run("extend", lease_id, ttl_ms)
        return status, int(r[1]) if status == "extended" else 0
