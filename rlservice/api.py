"""The gRPC servicer: messages in and out, validation and status codes; no capacity logic."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Final, Literal, NoReturn, Protocol, cast, get_args

import grpc
from grpc.aio import ServicerContext

from rlcommon.interceptors import Handler
from rlcommon.latest import follow
from rlcommon.scopes import CALLER
from rlcommon.server import ServerSetup
from rlcommon.watch_cap import DEFAULT_MAX_WATCH_STREAMS, WRITES_PER_S, StreamCap
from rlcommon.write_budget import WriteBudget
from rlproto import ratelimit_pb2 as pb
from rlproto import ratelimit_pb2_grpc as pb_grpc

from . import watch
from .capacity.pools import Pool
from .errors import InvalidArgument, NotFound, PermissionDenied, ServiceError
from .limiter import Limiter
from .metrics import NO_METRICS, ServiceMetrics
from .results import AllocationReport, Grant, ReleaseResult
from .types import RATE_DIMS, Outcome, ProviderFeedback, Usage

log = logging.getLogger(__name__)

MAX_ID_LENGTH = 256
MAX_TTL_MS = 24 * 3_600_000
# Far above any real call, low enough to stop a garbage value from swamping the ledger.
MAX_USAGE = 100_000_000
# A provider's remaining or retry-after beyond this is garbage (the ledger counts in doubles).
MAX_FEEDBACK = 10**12
_Remaining = Literal["remaining_tokens", "remaining_requests", "remaining_input_tokens", "remaining_output_tokens"]
_REMAINING: tuple[_Remaining, ...] = get_args(_Remaining)

Context = ServicerContext[Any, Any]
SERVICE: Final = pb.DESCRIPTOR.services_by_name["RateLimiter"].full_name
_OUTCOMES = frozenset(int(o) for o in Outcome)

# The result label of a failed call in the metrics.
RESULTS: Final = {
    grpc.StatusCode.INVALID_ARGUMENT: "invalid",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "exhausted",
    grpc.StatusCode.DEADLINE_EXCEEDED: "deadline",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.PERMISSION_DENIED: "denied",
}


# Slot counts are int32 in the API; a limit far above any estimate is "unbounded" there.
INT32_MAX = 2**31 - 1


def _slots(n: int) -> int:
    return min(n, INT32_MAX)


def _rates(p: Pool) -> dict[str, int | None]:
    """The pool's rate dimensions by their field names in Pool and Limits (unset: not limited)."""
    return dict(zip(RATE_DIMS, p.rates, strict=True))


def _pool(p: Pool) -> pb.Pool:
    return pb.Pool(
        total_slots=_slots(p.total_slots),
        max_concurrent=p.max_concurrent,
        paused_until_ms=p.paused_until_ms,
        external_tokens=p.external[0],
        external_requests=p.external[1],
        outside_tokens_per_minute=p.outside[0],
        outside_requests_per_minute=p.outside[1],
        **_rates(p),
    )


def _limits(p: Pool) -> pb.Limits:
    return pb.Limits(max_concurrent_requests=p.max_concurrent, **_rates(p))


def _usage(u: pb.Usage) -> Usage:
    usage = Usage(u.request_count, u.input_tokens, u.output_tokens, u.cached_tokens)
    for name in ("request_count", "input_tokens", "output_tokens", "cached_tokens"):
        value = getattr(usage, name)
        if value < 0:
            raise InvalidArgument(f"actual.{name} is negative ({value})")
        if value > MAX_USAGE:
            raise InvalidArgument(f"actual.{name} = {value} is absurd (above {MAX_USAGE})")
    return usage


def _feedback(request: pb.ReleaseRequest) -> ProviderFeedback | None:
    """What the provider said, checked; None when the Release carries nothing of it."""
    if not request.HasField("provider"):
        return None
    fb = request.provider
    values = {"retry_after_ms": fb.retry_after_ms}
    values.update({name: getattr(fb, name) for name in _REMAINING if fb.HasField(name)})
    for name, value in values.items():
        if value < 0:
            raise InvalidArgument(
                f"provider.{name} is negative ({value}): pass what the provider's headers say, or leave it unset"
            )
        if value > MAX_FEEDBACK:
            raise InvalidArgument(f"provider.{name} = {value} is absurd (above {MAX_FEEDBACK})")
    return ProviderFeedback(**values)


def _check_id(name: str, value: str) -> None:
    if not value:
        raise InvalidArgument(f"{name} is required")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(f"{name} is longer than {MAX_ID_LENGTH} characters")
    if not value.isprintable():
        raise InvalidArgument(f"{name} must not contain line breaks or other control characters")


def _check_scope(job_type: str, models: Sequence[str]) -> None:
    """Refuses a call outside the scope of the caller's token (rlcommon.scopes)."""
    refusal = CALLER.get().refusal(job_type, models)
    if refusal is not None:
        raise PermissionDenied(refusal)


def _check_ttl(name: str, value: int, required: bool) -> None:
    if value < 0 or (required and value == 0) or value > MAX_TTL_MS:
        low = 1 if required else 0
        raise InvalidArgument(f"{name} must be between {low} and {MAX_TTL_MS} ms, got {value}")


def _allocation_response(report: AllocationReport) -> pb.GetAllocationResponse:
    return pb.GetAllocationResponse(
        instance_id=report.instance_id,
        allocation=pb.Allocation(
            instance_count=report.instance_count,
            pools={m: _pool(p) for m, p in report.pools.items()},
            dynamic_limits={m: _limits(p) for m, p in report.pools.items()},
        ),
        job_types={
            n: pb.JobTypeState(
                current_ratio=t.current_ratio,
                initial_ratio=t.initial_ratio,
                flexible=t.flexible,
                in_flight=t.in_flight,
                allocated_slots=_slots(t.allocated_slots),
                waiting=t.waiting,
            )
            for n, t in report.job_types.items()
        },
        model_job_types={
            m: pb.ModelJobTypes(
                job_types={
                    n: pb.ModelJobTypeState(
                        allocated_slots=_slots(t.allocated_slots),
                        in_flight=t.in_flight,
                        window_used=t.window_used,
                        waiting=t.waiting,
                        overages=t.overages,
                    )
                    for n, t in rows.items()
                }
            )
            for m, rows in report.model_job_types.items()
        },
        memory_capacity_kb=report.memory_capacity_kb,
        active_leases=report.active_leases,
    )


def _failure(e: BaseException) -> str:
    if isinstance(e, ServiceError):
        return RESULTS.get(e.code, "error")
    return "cancelled" if isinstance(e, asyncio.CancelledError) else "error"


async def _abort(context: Context, e: ServiceError) -> NoReturn:
    await context.abort(e.code, str(e))
    raise AssertionError("abort returns only by raising") from e


class RateLimiterServicer(pb_grpc.RateLimiterServicer):
    """`metrics` hears every Acquire's and Release's answer; at most `max_watch_streams`
    WatchAllocation streams are open at once."""

    def __init__(
        self, limiter: Limiter, metrics: ServiceMetrics = NO_METRICS, max_watch_streams: int = DEFAULT_MAX_WATCH_STREAMS
    ) -> None:
        self._limiter = limiter
        self._metrics = metrics
        self._default_job_type = limiter.settings.default_job_type
        self.watch_streams = StreamCap(max_watch_streams, "this instance")
        self._writes = WriteBudget(WRITES_PER_S)
        self._feed = watch.AllocationFeed(
            limiter.changes, lambda: _allocation_response(limiter.allocation()).SerializeToString()
        )

    async def Acquire(self, request: pb.AcquireRequest, context: Context) -> pb.AcquireResponse:
        try:
            job_type, grant = await self._acquire(request, context.time_remaining())
        except BaseException as e:
            self._metrics.acquire_failed(*self._failure_labels(request), _failure(e))
            if isinstance(e, ServiceError):
                await _abort(context, e)
            raise
        self._metrics.acquired(grant.model, job_type, grant.waited_ms)
        return pb.AcquireResponse(
            lease_id=grant.lease_id,
            model_id=grant.model,
            models_tried=grant.models_tried,
            reserved=pb.Reservation(tokens=grant.tokens, requests=grant.requests),
            waited_ms=grant.waited_ms,
            lease_expires_at_ms=grant.expires_at_ms,
            instance_id=grant.instance_id,
        )

    async def _acquire(self, request: pb.AcquireRequest, time_left_s: float | None) -> tuple[str, Grant]:
        limiter = self._limiter
        _check_id("job_id", request.job_id)
        # Before any default applies: what the token may use is judged on what the request names.
        _check_scope(request.job_type, request.models)
        job_type = request.job_type or self._default_job_type
        if not job_type:
            raise InvalidArgument("job_type is required (the configuration names no default_job_type)")
        if job_type not in limiter.job_types:
            raise InvalidArgument(f"unknown job_type {job_type!r}; known: {', '.join(sorted(limiter.job_types))}")
        for name in request.models:
            if name not in limiter.models:
                raise InvalidArgument(f"unknown model {name!r}; known: {', '.join(limiter.model_order)}")
        if len(set(request.models)) != len(request.models):
            raise InvalidArgument("models lists a model twice")
        _check_ttl("lease_ttl_ms", request.lease_ttl_ms, required=False)
        grant = await limiter.acquire(
            request.job_id,
            job_type,
            limiter.models_for(request.models),
            request.lease_ttl_ms or limiter.settings.lease_ttl_ms,
            time_left_s,
        )
        # A job id already held by an open lease answers with that lease, which may be another
        # team's: a restricted token is not shown a lease it could not have taken.
        await self._check_lease_scope(grant.lease_id)
        return job_type, grant

    def _failure_labels(self, request: pb.AcquireRequest) -> tuple[str, str]:
        """(model, job_type) of a failed Acquire: the first model of its order and its job type, each
        empty when the request named an unknown one (labels come only from the configuration)."""
        limiter = self._limiter
        job_type = request.job_type or self._default_job_type
        order = request.models or limiter.model_order
        model = order[0] if order else ""
        return (model if model in limiter.models else ""), (job_type if job_type in limiter.job_types else "")

    async def Release(self, request: pb.ReleaseRequest, context: Context) -> pb.ReleaseResponse:
        try:
            result = await self._release(request)
        except BaseException as e:
            self._metrics.release_failed(_failure(e))
            if isinstance(e, ServiceError):
                await _abort(context, e)
            raise
        c = result.closed
        self._metrics.released(c)
        return pb.ReleaseResponse(
            refunded_tokens=c.refunded_tokens,
            refunded_requests=c.refunded_requests,
            overage_tokens=c.overage_tokens,
            overage_requests=c.overage_requests,
            same_window=c.same_window,
            cost_usd=result.cost_usd,
            paused_until_ms=c.paused_until_ms,
            external_tokens=c.external_tokens,
            external_requests=c.external_requests,
        )

    async def _release(self, request: pb.ReleaseRequest) -> ReleaseResult:
        _check_id("lease_id", request.lease_id)
        if request.outcome == pb.OUTCOME_UNSPECIFIED:
            raise InvalidArgument(
                "outcome is required: SUCCESS, FAILED_WITH_USAGE, FAILED_UNKNOWN_USAGE or RATE_LIMITED"
            )
        if request.outcome not in _OUTCOMES:
            raise InvalidArgument(f"unknown outcome {request.outcome}")
        usage = _usage(request.actual)
        provider = _feedback(request)
        await self._check_lease_scope(request.lease_id)
        return await self._limiter.release(request.lease_id, Outcome(request.outcome), usage, provider)

    async def ExtendLease(self, request: pb.ExtendLeaseRequest, context: Context) -> pb.ExtendLeaseResponse:
        try:
            _check_id("lease_id", request.lease_id)
            _check_ttl("ttl_ms", request.ttl_ms, required=True)
            await self._check_lease_scope(request.lease_id)
            expires = await self._limiter.extend(request.lease_id, request.ttl_ms)
        except ServiceError as e:
            await _abort(context, e)
        return pb.ExtendLeaseResponse(lease_expires_at_ms=expires)

    async def _check_lease_scope(self, lease_id: str) -> None:
        """A restricted token may release or extend only leases of its job types and models. An
        unknown lease passes: the call itself then answers NOT_FOUND."""
        if not CALLER.get().restricted:
            return
        use = await self._limiter.lease_use(lease_id)
        if use is not None:
            job_type, model = use
            _check_scope(job_type, (model,))

    async def GetAllocation(self, request: pb.GetAllocationRequest, context: Context) -> pb.GetAllocationResponse:
        try:
            self._check_instance(request.instance_id)
        except ServiceError as e:
            await _abort(context, e)
        return _allocation_response(self._limiter.allocation())

    # Registered by add_to_server with no response serializer: it writes the feed's bytes, which
    # the generated servicer's signature (messages) cannot say.
    async def WatchAllocation(  # type: ignore[override]
        self, request: pb.WatchAllocationRequest, context: Context
    ) -> None:
        try:
            interval = watch.interval_s(request.min_interval_ms)
            self._check_instance(request.instance_id)
        except ServiceError as e:
            await _abort(context, e)
        refusal = self.watch_streams.take()
        if refusal is not None:
            self._metrics.watch_refused()
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        try:
            latest = self._feed.subscribe()
            try:
                async for message in follow(latest, interval, self._writes):
                    await context.write(message)
            finally:
                self._feed.unsubscribe()
        finally:
            self.watch_streams.give_back()

    def _check_instance(self, instance_id: str) -> None:
        own = self._limiter.instance_id
        if instance_id and instance_id != own:
            raise NotFound(f"this is instance {own!r}, not {instance_id!r}; ask that instance or go through rlproxy")


class _MethodRegistry(Protocol):
    # grpc.aio.Server has it since grpcio 1.63; the type stubs predate it.
    def add_registered_method_handlers(self, service_name: str, method_handlers: dict[str, Any]) -> None: ...


class _Generated:
    """Stands for a server while the generated code registers the servicer, to keep its handlers;
    the generated code calls these two methods only."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        """They hold the same handlers as the registered ones, kept from there."""

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict[str, Handler]) -> None:
        self.handlers = method_handlers


def add_to_server(servicer: RateLimiterServicer, server: grpc.aio.Server, setup: ServerSetup) -> None:
    """The generated handlers, wrapped by `setup` once here rather than by an interceptor on every
    call, with WatchAllocation taking the bytes it writes as they are."""
    generated = _Generated()
    pb_grpc.add_RateLimiterServicer_to_server(servicer, cast(grpc.aio.Server, generated))
    generated.handlers["WatchAllocation"] = grpc.unary_stream_rpc_method_handler(
        servicer.WatchAllocation, request_deserializer=pb.WatchAllocationRequest.FromString
    )
    handlers = setup.handlers(generated.handlers)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    # A registered method's handler is found without asking the generic handlers.
    cast(_MethodRegistry, server).add_registered_method_handlers(SERVICE, handlers)
