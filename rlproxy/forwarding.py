"""The RateLimiter pass-through.

Requests and replies travel as the bytes they arrived as; only Release, ExtendLease,
GetAllocation and WatchAllocation requests are decoded, for the one id that decides where they
go, and the Acquire requests of a restricted token, to check them against its scope. Release and
ExtendLease scopes are checked by the issuing instance, which alone knows a lease's job type and
sees the client's token. Deadlines, metadata both ways and error statuses pass through unchanged.
WatchAllocation clients that ask a target the same share one stream from it (rlproxy.watches),
each getting its newest message as it can read it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Final, NoReturn, TypeVar, cast

import grpc
from google.protobuf.message import DecodeError, Message
from grpc import aio

from rlcommon.latest import follow
from rlcommon.scopes import CALLER
from rlcommon.watch_cap import DEFAULT_MAX_WATCH_STREAMS, WRITES_PER_S, StreamCap
from rlcommon.write_budget import WriteBudget
from rlproto import ratelimit_pb2
from rlproxy.leases import issuing_instance
from rlproxy.metrics import NO_METRICS, NO_TARGET, ProxyMetrics
from rlproxy.policies import Policy
from rlproxy.targets import Target, TargetPool, never_reached
from rlproxy.watches import WatchHub

Context = aio.ServicerContext[bytes, bytes]
Method = aio.UnaryUnaryMultiCallable[bytes, bytes]
StreamMethod = aio.UnaryStreamMultiCallable[bytes, bytes]
Metadata = tuple[tuple[str, str | bytes], ...]
M = TypeVar("M", bound=Message)

# The proxy's channels send their own user-agent; forwarding the client's would send two.
_USER_AGENT: Final = "user-agent"


def _outgoing_metadata(incoming: aio.Metadata | None) -> Metadata | None:
    if not incoming:
        return None
    if len(incoming) == 1 and next(iter(incoming))[0] == _USER_AGENT:
        return None
    return tuple((key, value) for key, value in incoming if key != _USER_AGENT) or None


async def _relay(err: aio.AioRpcError, context: Context) -> NoReturn:
    initial = err.initial_metadata()
    if initial:
        await context.send_initial_metadata(initial)
    # The stubs give AioRpcError the sync RpcError's tuple; at run time it carries aio.Metadata,
    # which abort() refuses: it takes only a tuple.
    trailing = tuple(cast(aio.Metadata, err.trailing_metadata()) or ())
    await context.abort(err.code(), err.details() or "", trailing)


def _unreachable(instance_id: str, lease_id: str) -> str:
    return (
        f"instance {instance_id} that issued lease {lease_id} is not reachable through this proxy"
        " (stopped or restarted?)"
    )


class Forwarder:
    """`metrics` hears of every call sent to a target and of every call the proxy answers itself."""

    def __init__(
        self,
        pool: TargetPool,
        policy: Policy,
        metrics: ProxyMetrics = NO_METRICS,
        max_watch_streams: int = DEFAULT_MAX_WATCH_STREAMS,
    ) -> None:
        self._pool = pool
        self._targets = pool.targets
        self._policy = policy
        self._metrics = metrics
        self.watch_streams = StreamCap(max_watch_streams, "this proxy")
        self.watches = WatchHub()
        self._writes = WriteBudget(WRITES_PER_S)

    async def _call(self, target: Target, name: str, method: Method, request: bytes, context: Context) -> bytes:
        code = grpc.StatusCode.OK
        try:
            call = method(
                request,
                timeout=context.time_remaining(),
                metadata=_outgoing_metadata(context.invocation_metadata()),
            )
            # When the client cancels, gRPC cancels this handler, and awaiting the call cancels the
            # outgoing call with it.
            response = await call
            initial = await call.initial_metadata()
            if initial:
                await context.send_initial_metadata(initial)
            trailing = await call.trailing_metadata()
            if trailing:
                context.set_trailing_metadata(trailing)
            return response
        except aio.AioRpcError as err:
            code = err.code()
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self._metrics.request(target.address, name, code)

    async def _reject(self, context: Context, name: str, code: grpc.StatusCode, details: str) -> NoReturn:
        self._metrics.request(NO_TARGET, name, code)
        await context.abort(code, details)

    async def _parse(self, message: type[M], name: str, request: bytes, context: Context) -> M:
        try:
            return message.FromString(request)
        except DecodeError as e:
            # The words of an instance (rlcommon.parsing): the same mistake reads the same on both.
            await self._reject(
                context, name, grpc.StatusCode.INVALID_ARGUMENT, f"the {name} request does not parse: {e}"
            )

    async def acquire(self, request: bytes, context: Context) -> bytes:
        scope = CALLER.get()
        if scope.restricted:
            asked = await self._parse(ratelimit_pb2.AcquireRequest, "Acquire", request, context)
            refusal = scope.refusal(asked.job_type, asked.models)
            if refusal is not None:
                await self._reject(context, "Acquire", grpc.StatusCode.PERMISSION_DENIED, refusal)
        targets, policy = self._targets, self._policy
        excluded = 0
        failures: dict[int, str] | None = None
        while True:
            index = policy.pick(targets, excluded)
            if index < 0:
                if await self._await_answers("Acquire", context, failures):
                    continue
                await self._reject(context, "Acquire", grpc.StatusCode.UNAVAILABLE, self._no_target(failures))
            target = targets[index]
            target.acquiring += 1
            try:
                response = await self._call(target, "Acquire", target.acquire, request, context)
            except aio.AioRpcError as err:
                if not never_reached(err):
                    await _relay(err, context)
                # Acquire is idempotent by job_id and this one never reached the target, so the
                # next target may take it.
                policy.unpick(index)
                excluded |= 1 << index
                if failures is None:
                    failures = {}
                failures[index] = err.details() or ""
                continue
            finally:
                target.acquiring -= 1
            target.lease_granted()
            return response

    async def release(self, request: bytes, context: Context) -> bytes:
        lease_id = (await self._parse(ratelimit_pb2.ReleaseRequest, "Release", request, context)).lease_id
        target, instance_id = await self._issuer("Release", lease_id, context)
        response = await self._to_issuer(target, "Release", target.release, instance_id, lease_id, request, context)
        target.lease_released()
        return response

    async def extend_lease(self, request: bytes, context: Context) -> bytes:
        name = "ExtendLease"
        lease_id = (await self._parse(ratelimit_pb2.ExtendLeaseRequest, name, request, context)).lease_id
        target, instance_id = await self._issuer(name, lease_id, context)
        return await self._to_issuer(target, name, target.extend_lease, instance_id, lease_id, request, context)

    async def get_allocation(self, request: bytes, context: Context) -> bytes:
        name = "GetAllocation"
        instance_id = (await self._parse(ratelimit_pb2.GetAllocationRequest, name, request, context)).instance_id
        if instance_id:
            target = await self._named(name, instance_id, context)
            try:
                return await self._call(target, name, target.get_allocation, request, context)
            except aio.AioRpcError as err:
                await _relay(err, context)
        failures: dict[int, str] = {}
        while True:
            for index, target in enumerate(self._targets):
                if not target.serving or index in failures:
                    continue
                try:
                    return await self._call(target, name, target.get_allocation, request, context)
                except aio.AioRpcError as err:
                    if not never_reached(err):
                        await _relay(err, context)
                    failures[index] = err.details() or ""
            if not await self._await_answers(name, context, failures):
                await self._reject(context, name, grpc.StatusCode.UNAVAILABLE, self._no_target(failures))

    async def watch_allocation(self, request: bytes, context: Context) -> None:
        """Follows the named instance's stream, else that of the first SERVING target that answers
        (waiting, like GetAllocation, for targets that have not answered their first health check)."""
        name = "WatchAllocation"
        instance_id = (await self._parse(ratelimit_pb2.WatchAllocationRequest, name, request, context)).instance_id
        refusal = self.watch_streams.take()
        if refusal is not None:
            await self._reject(context, name, grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        # A coroutine that writes, not a generator: when the client leaves, the cancellation lands
        # here and the slot and the shared stream are given back at once.
        try:
            async with contextlib.aclosing(self._watch(name, instance_id, request, context)) as replies:
                async for reply in replies:
                    await context.write(reply)
        finally:
            self.watch_streams.give_back()

    async def _watch(
        self, name: str, instance_id: str, request: bytes, context: Context
    ) -> AsyncGenerator[bytes, None]:
        failures: dict[int, str] = {}
        if instance_id:
            target = await self._named(name, instance_id, context)
            async with contextlib.aclosing(self._follow(target, request, context, failures, named=True)) as replies:
                async for reply in replies:
                    yield reply
            return
        while True:
            for index, target in enumerate(self._targets):
                if not target.serving or index in failures:
                    continue
                followed = False
                async with contextlib.aclosing(
                    self._follow(target, request, context, failures, named=False)
                ) as replies:
                    async for reply in replies:
                        followed = True
                        yield reply
                if followed or index not in failures:
                    return
            if not await self._await_answers(name, context, failures):
                await self._reject(context, name, grpc.StatusCode.UNAVAILABLE, self._no_target(failures))

    async def _follow(
        self, target: Target, request: bytes, context: Context, failures: dict[int, str], named: bool
    ) -> AsyncGenerator[bytes, None]:
        """The target's stream, shared with every client that asks it the same; one that never
        reached an unnamed target ends with nothing, its failure noted, so that the next target may
        serve it."""
        code = grpc.StatusCode.OK
        sent = False
        shared = self.watches.join(target, request, _outgoing_metadata(context.invocation_metadata()))
        try:
            replies = follow(shared.latest, 0.0, self._writes)
            async with contextlib.aclosing(replies):
                async for reply in replies:
                    if not sent and shared.initial:
                        await context.send_initial_metadata(shared.initial)
                    sent = True
                    yield reply
            if shared.trailing:
                context.set_trailing_metadata(tuple(shared.trailing))
        except aio.AioRpcError as err:
            code = err.code()
            if named or sent or not never_reached(err):
                await _relay(err, context)
            failures[self._targets.index(target)] = err.details() or ""
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self.watches.leave(shared)
            self._metrics.request(target.address, "WatchAllocation", code)

    async def _named(self, name: str, instance_id: str, context: Context) -> Target:
        target = await self._find(name, instance_id, context)
        if target is None:
            await self._reject(
                context,
                name,
                grpc.StatusCode.NOT_FOUND,
                f"unknown instance {instance_id}: none of this proxy's targets has that id",
            )
        return target

    async def _issuer(self, name: str, lease_id: str, context: Context) -> tuple[Target, str]:
        instance_id = issuing_instance(lease_id)
        if instance_id is None:
            await self._reject(
                context,
                name,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"malformed lease_id {lease_id!r}: expected <instance_id>/<token>",
            )
        target = await self._find(name, instance_id, context)
        if target is None:
            await self._reject(context, name, grpc.StatusCode.UNAVAILABLE, _unreachable(instance_id, lease_id))
        return target, instance_id

    async def _find(self, name: str, instance_id: str, context: Context) -> Target | None:
        """The target serving `instance_id`.

        A target learns its instance id when it turns SERVING, so while some have not answered yet
        the id may be theirs: wait for them before asking every target.
        """
        pool = self._pool
        target = pool.known(instance_id)
        while target is None and await self._await_answers(name, context, None):
            target = pool.known(instance_id)
        return target or await pool.find(instance_id)

    async def _await_answers(self, name: str, context: Context, failures: dict[int, str] | None) -> bool:
        """Waits for the next change of a target's state while some target has not answered its
        first health check; False when every target has, so waiting cannot help.

        Aborts with DEADLINE_EXCEEDED when the call's deadline has passed. A call with no deadline
        waits at most until the pool gives up on the targets' first answers.
        """
        if not self._pool.pending:
            return False
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            await self._reject(
                context,
                name,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"deadline passed while waiting for a target's first health answer: {self._states(failures)}",
            )
        await self._pool.next_change(remaining)
        return True

    async def _to_issuer(
        self,
        target: Target,
        name: str,
        method: Method,
        instance_id: str,
        lease_id: str,
        request: bytes,
        context: Context,
    ) -> bytes:
        try:
            return await self._call(target, name, method, request, context)
        except aio.AioRpcError as err:
            if never_reached(err):
                await context.abort(grpc.StatusCode.UNAVAILABLE, _unreachable(instance_id, lease_id))
            await _relay(err, context)

    def _no_target(self, failures: dict[int, str] | None) -> str:
        return f"no healthy target: {self._states(failures)}"

    def _states(self, failures: dict[int, str] | None) -> str:
        return ", ".join(
            f"{t.address} (unreachable: {failures[i]})" if failures and i in failures else t.describe()
            for i, t in enumerate(self._targets)
        )
