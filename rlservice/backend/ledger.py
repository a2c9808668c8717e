"""Calls the ledger's Lua scripts by SHA and turns their replies into plain data."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisClusterException
from redis.exceptions import RedisError as RedisError

from ..config import MAX_MODELS
from ..types import KIND_DIMS, Estimate, ModelLimits, Outcome, ProviderFeedback, Snapshot, Usage
from .wire import CallReply, parse_reply
from .wire import ClosedLease as ClosedLease

# The script's parts, in order: the hot path and its operations, then the rest, made into a
# function that a call runs only when it needs one of those operations (cold.lua says why).
HOT_OPS = ("acquire", "release")
# What the hot operations share: lib.lua, and the provider's word a Release may carry.
HOT_PARTS = ("lib", "feedback")
# kinds.lua is the body of a function lib.lua's model() makes only for a model that limits input or
# output tokens apart: made at the top of the script, it would cost every call.
KINDS_AT = "--[[kinds.lua]]"
COLD_OPS = ("expire", "extend", "register", "heartbeat", "reap", "unregister", "waiting")
OPS = HOT_OPS + COLD_OPS


# What a failed call to Redis raises; a cluster client also raises its own (a slot no node serves).
REDIS_ERRORS = (RedisError, RedisClusterException, OSError)


class LedgerUnavailable(Exception):
    """Redis cannot be reached or failed; callers fail closed."""


class ModelLedgerUnavailable(LedgerUnavailable):
    """One model's ledger cannot be reached while the others' may answer (a cluster's shard down)."""


class NotRegistered(Exception):
    """The ledger no longer knows this instance (it was found stale); it must register again."""


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
class AcquireCall:
    """One attempt to take a job's estimate from a model's ledger. token_kinds: the model limits
    input or output tokens apart, so the estimate's parts go along (a model without them costs
    Redis nothing for them)."""

    model: str
    job_id: str
    job_type: str
    lease_id: str
    estimate: Estimate
    ttl_ms: int
    lend: bool
    peek: bool
    token_kinds: bool = False


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


@dataclass(frozen=True, slots=True)
class FeedbackPolicy:
    """The ledger's side of provider_feedback: pauses and when a provider's remaining is charged."""

    max_pause_ms: int = 60_000
    default_pause_ms: int = 1000
    # Per kind (KINDS): how far the provider's remaining may fall below the ledger's.
    tolerance: tuple[int, int, int, int] = (0, 1, 0, 0)
    # How fast a rolling model learns an outside consumer's rate (feedback.lua); 0: it does not.
    outside_rate_time_constant_ms: int = 20_000


def _remaining(value: int | None) -> int | str:
    return "" if value is None else value


# The names register.lua gives the limits, in RATE_DIMS order; input and output tokens follow the
# window mode, only for a model that limits them (kinds.lua).
_LIMIT_FIELDS = ("tpm", "rpm", "tpd", "rpd")


def _model_json(lim: ModelLimits) -> dict[str, int | str]:
    limits: dict[str, int | str] = {field: lim.rates[i] or 0 for i, field in enumerate(_LIMIT_FIELDS)}
    roll = "1" if lim.rolling else "0"
    if lim.token_kinds:
        itpm, otpm = (lim.rates[i] or 0 for i in KIND_DIMS)
        roll += f" {itpm} {otpm} {1 if lim.cached_as_input else 0}"
    return limits | {"conc": lim.max_concurrent or 0, "roll": roll}


def limits_json(models: dict[str, ModelLimits]) -> str:
    return json.dumps({name: _model_json(lim) for name, lim in models.items()})


class Ledger:
    """One instance's calls to the ledger script. Concurrent calls are coalesced (group commit):
    while a script call is in flight, the operations that arrive queue and go together in the next
    call; an idle ledger sends each operation at once, alone. Redis spends far more on a script call
    than on one operation in it, so the fewer calls the better."""

    MAX_CALLS = 1
    MAX_BATCH = 64

    def __init__(
        self,
        redis: Redis | RedisCluster,
        prefix: str,
        instance_id: str,
        stale_after_ms: int,
        observe: Callable[[str, float], None] | None = None,
        feedback: FeedbackPolicy = FeedbackPolicy(),
    ) -> None:
        # redis-py leaves execute_command unannotated.
        self._exec = cast(Callable[..., Awaitable[Any]], redis.execute_command)
        self._key = "{" + prefix + "}"
        self.channel = self._key + ":events"
        self.instance_id = instance_id
        self._stale = stale_after_ms
        self._feedback = (
            feedback.max_pause_ms,
            feedback.default_pause_ms,
            *feedback.tolerance,
            feedback.outside_rate_time_constant_ms,
        )
        self._source = self._script_text()
        self._sha = ""
        self._observe = observe
        self._queue: list[tuple[str, tuple[Any, ...], asyncio.Future[tuple[list[str], CallReply]]]] = []
        self._calls = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def _script_text() -> str:
        folder = resources.files(__package__).joinpath("scripts")

        def text(names: tuple[str, ...]) -> str:
            return "\n".join(folder.joinpath(f"{name}.lua").read_text() for name in names)

        hot = text((*HOT_PARTS, *HOT_OPS))

        return "\n".join(
            [
                hot.replace(KINDS_AT, text(("kinds",))),
                "local function cold_ops()",
                text(("cold", *COLD_OPS)),
                "return OPS, foreign_news",
                "end",
                text(("main",)),
            ]
        )

    def unreachable(self) -> list[str]:
        """Models unreachable while others answer: never, one Redis holds them all."""
        return []

    def lease_suffix(self, model: str) -> str:
        """What a lease id of the model ends with after its token: nothing, one ledger holds them all."""
        return ""

    async def load(self) -> None:
        try:
            # One word, as redis-py's own script_load sends it: a cluster client runs it on every master.
            sha = await self._exec("SCRIPT LOAD", self._source)
            self._sha = sha.decode() if isinstance(sha, bytes) else str(sha)
        except REDIS_ERRORS as e:
            raise LedgerUnavailable(f"redis: {e}") from e

    # ----- group commit ----------------------------------------------------------------------

    async def _run(self, op: str, *args: Any) -> tuple[str, list[str], CallReply]:
        """Runs one operation; returns its status (the reply's first line), the reply's lines and
        the whole call's reply (the states after it)."""
        future: asyncio.Future[tuple[list[str], CallReply]] = asyncio.get_running_loop().create_future()
        self._queue.append((op, args, future))
        if self._calls < self.MAX_CALLS:
            self._send_next()
        lines, call = await future
        status = lines[0]
        if status == "unregistered":
            raise NotRegistered(self.instance_id)
        return status, lines, call

    def _send_next(self) -> None:
        self._calls += 1
        task = asyncio.get_running_loop().create_task(self._send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _eval(self, argv: list[Any]) -> CallReply:
        try:
            raw = await self._exec("EVALSHA", self._sha, 1, self._key, self.instance_id, *argv)
        except NoScriptError:
            # Redis restarted or flushed its script cache: nothing ran; load once more and retry.
            await self.load()
            raw = await self._exec("EVALSHA", self._sha, 1, self._key, self.instance_id, *argv)
        return parse_reply(raw)

    async def _send(self) -> None:
        # The batch is taken when the task first runs, not when it was created: what the rest of
        # the loop's turn queued goes along (a turn serves many RPCs at once under load), and an idle
        # ledger still sends a lone operation at once.
        batch = self._queue[: self.MAX_BATCH]
        del self._queue[: self.MAX_BATCH]
        argv: list[Any] = []
        for op, args, _ in batch:
            argv += (op, len(args), *args)
        started = time.perf_counter()
        try:
            call = await self._eval(argv)
        except (*REDIS_ERRORS, LedgerUnavailable) as e:
            error = e if isinstance(e, LedgerUnavailable) else LedgerUnavailable(f"redis: {e}")
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(error)
        else:
            for (_, _, future), lines in zip(batch, call.replies, strict=True):
                if not future.done():
                    future.set_result((lines, call))
        finally:
            self._calls -= 1
            if self._observe is not None:
                self._observe(batch[0][0] if len(batch) == 1 else "batch", time.perf_counter() - started)
            if self._queue and self._calls < self.MAX_CALLS:
                self._send_next()

    # ----- operations ------------------------------------------------------------------------

    async def register(self, models: dict[str, ModelLimits]) -> dict[str, Snapshot] | None:
        """The states after registering, or None while an earlier registration of this id is still
        being closed (call again). Raises LedgerUnavailable when the ledger would hold more than
        MAX_MODELS models."""
        status, r, call = await self._run("register", limits_json(models), MAX_MODELS)
        if status == "too_many_models":
            raise LedgerUnavailable(
                f"the ledger under key prefix {self._key} holds {r[1]} models and this configuration adds {r[2]}:"
                f" at most {MAX_MODELS} share a key prefix; remove those no longer configured anywhere"
                f" (SREM {self._key}:models NAME) or use another --key-prefix"
            )
        if status == "busy":
            return None
        return call.snapshots

    async def heartbeat(self) -> tuple[dict[str, Snapshot], bool]:
        """The states, and whether maintenance is waiting (see reap)."""
        _, r, call = await self._run("heartbeat", self._stale)
        return call.snapshots, r[1] == "1"

    async def reap(self) -> bool:
        """One bounded step of maintenance (removing a stale instance, else freeing expired leases);
        True while more is waiting. Sent alone, never in a batch: an Acquire coalesced with it would
        wait for the whole step."""
        started = time.perf_counter()
        try:
            call = await self._eval(["reap", 1, self._stale])
        except REDIS_ERRORS as e:
            raise LedgerUnavailable(f"redis: {e}") from e
        finally:
            if self._observe is not None:
                self._observe("reap", time.perf_counter() - started)
        return call.replies[0][1] == "1"

    async def unregister(self) -> bool:
        """One bounded step of leaving; True once this instance is gone from the ledger."""
        status, _, _ = await self._run("unregister")
        return status == "ok"

    async def set_waiting(self, model: str, waiting: bool) -> Snapshot:
        """Records whether this instance has requests waiting for the model (lending stops for the
        others while it has)."""
        status, _, call = await self._run("waiting", model, "1" if waiting else "0")
        return self._state_of(status, call, model)

    @staticmethod
    def _state_of(status: str, call: CallReply, model: str) -> Snapshot:
        snap = call.snapshots.get(model)
        if status == "unknown_model" or snap is None:
            raise LedgerUnavailable(f"the ledger does not know model {model!r}")
        return snap

    async def acquire(self, request: AcquireCall) -> AcquireReply:
        estimate = request.estimate
        args: tuple[Any, ...] = (
            request.model,
            request.job_id,
            request.job_type,
            request.lease_id,
            estimate.tokens,
            estimate.requests,
            request.ttl_ms,
            "1" if request.lend else "0",
            "1" if request.peek else "0",
        )
        if request.token_kinds:
            args += (estimate.input_tokens, estimate.output_tokens)
        status, r, call = await self._run("acquire", *args)
        if status == "existing":
            # The lease id, then its open record: owner, model, job type, windows, estimates,
            # expiry, job id.
            lease = OpenLease(
                lease_id=r[1],
                owner=r[2],
                model=r[3],
                job_type=r[4],
                minute_window=int(r[5]),
                day_window=int(r[6]),
                estimate_tokens=int(r[7]),
                estimate_requests=int(r[8]),
                expires_at_ms=int(r[9]),
            )
            snap = self._state_of(status, call, lease.model)
            return AcquireReply(status, snap, expires_at_ms=lease.expires_at_ms, existing=lease)
        snap = self._state_of(status, call, request.model)
        if status == "granted":
            return AcquireReply(status, snap, expires_at_ms=int(r[1]))
        return AcquireReply(status, snap)

    async def release(
        self, lease_id: str, outcome: Outcome, usage: Usage, provider: ProviderFeedback | None = None
    ) -> ReleaseReply:
        args: tuple[Any, ...] = (
            lease_id,
            int(outcome),
            usage.input_tokens,
            usage.output_tokens,
            usage.cached_tokens,
            usage.request_count,
        )
        # A 429 pauses the model even when the caller read no retry-after (feedback.lua).
        if provider is not None or outcome is Outcome.RATE_LIMITED:
            fb = provider or ProviderFeedback()
            args += (
                fb.retry_after_ms,
                _remaining(fb.remaining_tokens),
                _remaining(fb.remaining_requests),
                _remaining(fb.remaining_input_tokens),
                _remaining(fb.remaining_output_tokens),
            )
            args += self._feedback
        status, r, call = await self._run("release", *args)
        return self._closing_reply(status, r, call)

    async def expire(self, lease_id: str) -> ReleaseReply:
        status, r, call = await self._run("expire", lease_id)
        if status == "extended":
            return ReleaseReply("extended", expires_at_ms=int(r[1]))
        return self._closing_reply(status, r, call)

    @staticmethod
    def _closing_reply(status: str, r: list[str], call: CallReply) -> ReleaseReply:
        if status == "unknown":
            return ReleaseReply(status)
        closed = ClosedLease.from_lines(r, 1)
        if status == "closed":
            return ReleaseReply(status, closed=closed)
        return ReleaseReply(status, closed=closed, snapshot=call.snapshots.get(closed.model))

    async def lease_use(self, lease_id: str) -> tuple[str, str] | None:
        """(job type, model) of a lease open or closed within the hour, None when the ledger has no
        record of it. A lease's job type and model never change, so one plain read answers."""
        try:
            raw = await self._exec("GET", f"{self._key}:lease:{lease_id}")
        except REDIS_ERRORS as e:
            raise LedgerUnavailable(f"redis: {e}") from e
        if raw is None:
            return None
        # Open and closed records alike start with their state, owner, model and job type.
        fields = (raw.decode() if isinstance(raw, bytes) else str(raw)).split("\n", 4)
        return fields[3], fields[2]

    async def extend(self, lease_id: str, ttl_ms: int) -> tuple[str, int]:
        """Returns (status, expires_at_ms); status is extended, closed or unknown."""
        status, r, _ = await self._run("extend", lease_id, ttl_ms)
        return status, int(r[1]) if status == "extended" else 0
