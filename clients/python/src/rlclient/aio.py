"""asyncio client: ``AsyncRateLimitClient`` and its ``AsyncLease``, the same shape as the blocking one."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio

from rlclient._lease import LeaseState
from rlclient._proto import ratelimit_pb2 as pb
from rlclient._proto import ratelimit_pb2_grpc as pb_grpc
from rlclient.errors import LeaseNotFound, RateLimitError, from_rpc_error
from rlclient.retry import NO_RETRY, RetryPolicy, deadline_after, next_backoff, time_left
from rlclient.security import token_metadata
from rlclient.types import CallReport, Outcome, ProviderFeedback, ReleaseResult, Usage, release_request

log = logging.getLogger("rlclient")

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class AcquireContext:
    """What ``acquire`` returns: await it for the lease, or use it with ``async with`` to get a
    lease that is released when the block ends.

    Nothing is sent until it is awaited or entered.
    """

    def __init__(self, acquire: Callable[[], Awaitable[AsyncLease]]) -> None:
        self._acquire = acquire
        self._lease: AsyncLease | None = None

    def __await__(self) -> Generator[Any, None, AsyncLease]:
        return self._acquire().__await__()

    async def __aenter__(self) -> AsyncLease:
        self._lease = await self._acquire()
        return self._lease

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._lease is not None:
            await self._lease.__aexit__(exc_type, exc, tb)


class AsyncRateLimitClient:
    """Talks to one ``rlservice`` instance or ``rlproxy`` over one channel, from one event loop.

    ``credentials`` switches to TLS (see :func:`rlclient.tls_credentials`); with ``token`` every call
    carries ``authorization: Bearer <token>``. ``rpc_timeout`` bounds Release, ExtendLease and
    GetAllocation (retries included); Acquire is bounded only by the ``timeout`` given to
    :meth:`acquire`, since waiting is its job.
    """

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        retry: RetryPolicy | None = None,
        rpc_timeout: float | None = 10.0,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self._channel = (
            grpc.aio.secure_channel(target, credentials, options)
            if credentials is not None
            else grpc.aio.insecure_channel(target, options)
        )
        self._stub = pb_grpc.RateLimiterStub(self._channel)
        self._retry = retry or RetryPolicy()
        self._rpc_timeout = rpc_timeout
        self._metadata = token_metadata(token)

    async def close(self) -> None:
        await self._channel.close(grace=None)

    async def __aenter__(self) -> AsyncRateLimitClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def acquire(
        self,
        job_type: str,
        *,
        models: Sequence[str] | None = None,
        job_id: str | None = None,
        timeout: float | None = None,
        lease_ttl_ms: int | None = None,
        keepalive: bool = False,
    ) -> AcquireContext:
        """Waits for capacity: ``lease = await client.acquire(...)`` or
        ``async with client.acquire(...) as lease:``.

        ``models`` is the escalation order (None: the service's configured order). ``timeout`` in
        seconds caps the whole wait, retries included. With ``keepalive`` a task extends the lease
        until it is released.
        """
        return AcquireContext(
            lambda: self._acquire(
                job_type,
                models=models,
                job_id=job_id or str(uuid.uuid4()),
                wait_s=timeout,
                lease_ttl_ms=lease_ttl_ms,
                keepalive=keepalive,
            )
        )

    async def release(
        self,
        lease_id: str,
        outcome: Outcome,
        usage: Usage | None = None,
        provider: ProviderFeedback | None = None,
    ) -> ReleaseResult:
        """Releases a lease by id, with the provider's feedback if any. Prefer ``AsyncLease.release``
        or the context manager."""
        request = release_request(lease_id, outcome, usage, provider)
        response = await self._call(self._stub.Release, request, deadline_after(self._rpc_timeout), self._retry)
        return ReleaseResult.from_proto(response)

    async def extend(self, lease_id: str, ttl_ms: int) -> int:
        """Pushes the lease's expiry to ``ttl_ms`` from now; returns the new expiry (epoch ms)."""
        request = pb.ExtendLeaseRequest(lease_id=lease_id, ttl_ms=ttl_ms)
        response = await self._call(self._stub.ExtendLease, request, deadline_after(self._rpc_timeout), NO_RETRY)
        return response.lease_expires_at_ms

    async def allocation(self, instance_id: str = "") -> pb.GetAllocationResponse:
        """The pools and job-type state of one instance (through a proxy: ``instance_id``, or any)."""
        request = pb.GetAllocationRequest(instance_id=instance_id)
        return await self._call(self._stub.GetAllocation, request, deadline_after(self._rpc_timeout), NO_RETRY)

    async def watch_allocation(
        self, instance_id: str = "", *, min_interval_ms: int = 0, timeout: float | None = None
    ) -> AsyncGenerator[pb.GetAllocationResponse, None]:
        """Follows one instance's allocation: yields it at once, then again whenever its pools, ratios,
        in-flight or waiting counts change, at most once per ``min_interval_ms`` (0: the service's 200).

        Stop by leaving the ``async for`` loop (or closing the iterator); ``timeout`` in seconds ends
        the iteration quietly. A slow reader gets the latest state, never a backlog.
        """
        request = pb.WatchAllocationRequest(instance_id=instance_id, min_interval_ms=min_interval_ms)
        call = self._stub.WatchAllocation(request, timeout=timeout, metadata=self._metadata)
        try:
            async for reply in call:
                yield reply
        except grpc.aio.AioRpcError as rpc_error:
            if timeout is not None and rpc_error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return
            raise from_rpc_error(rpc_error) from rpc_error
        finally:
            call.cancel()

    async def _acquire(
        self,
        job_type: str,
        *,
        models: Sequence[str] | None,
        job_id: str,
        wait_s: float | None,
        lease_ttl_ms: int | None,
        keepalive: bool,
    ) -> AsyncLease:
        request = pb.AcquireRequest(
            job_id=job_id, job_type=job_type, models=list(models or ()), lease_ttl_ms=lease_ttl_ms or 0
        )
        response = await self._call(self._stub.Acquire, request, deadline_after(wait_s), self._retry)
        lease = AsyncLease(self, response, job_type=job_type, job_id=job_id, models=models, lease_ttl_ms=lease_ttl_ms)
        if keepalive:
            lease.start_keepalive()
        return lease

    async def _call(
        self,
        method: Callable[..., Awaitable[Resp]],
        request: Req,
        deadline: float | None,
        policy: RetryPolicy,
    ) -> Resp:
        failed = 0
        while True:
            try:
                return await method(request, timeout=time_left(deadline), metadata=self._metadata)
            except grpc.aio.AioRpcError as rpc_error:
                error = from_rpc_error(rpc_error)
                failed += 1
                delay = next_backoff(policy, error, failed, deadline)
                if delay is None:
                    raise error from rpc_error
                log.debug("retrying after %s (attempt %d) in %.3fs", error, failed, delay)
                await asyncio.sleep(delay)


class AsyncLease(LeaseState):
    """A granted Acquire. With ``async with`` it releases itself when the block ends:

    - the block called :meth:`usage` → SUCCESS with that usage;
    - the block raised after :meth:`usage` → FAILED_WITH_USAGE with it;
    - the block called :meth:`report` (a provider adapter's reading of the answer or error) → that
      report's outcome, usage and feedback; a success the block raised after → FAILED_WITH_USAGE;
    - the block raised, or ended, without reporting usage → FAILED_UNKNOWN_USAGE (no refund).
    """

    def __init__(
        self,
        client: AsyncRateLimitClient,
        response: pb.AcquireResponse,
        *,
        job_type: str,
        job_id: str,
        models: Sequence[str] | None,
        lease_ttl_ms: int | None,
    ) -> None:
        super().__init__(response, job_type=job_type, job_id=job_id, models=models, lease_ttl_ms=lease_ttl_ms)
        self._client = client
        self._lock = asyncio.Lock()
        self._keepalive: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsyncLease:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.released:
            return
        report = self.on_exit(body_raised=exc is not None)
        if exc is None:
            await self._release(report)
            return
        try:
            await self._release(report)
        except RateLimitError as release_error:
            # The body's exception is the one the caller needs; the lease lapses at its TTL anyway.
            log.warning("could not release lease %s after the block failed: %s", self.lease_id, release_error)

    async def release(
        self, usage: Usage | None = None, *, outcome: Outcome | None = None, provider: ProviderFeedback | None = None
    ) -> ReleaseResult:
        """Releases now. With ``usage`` alone the outcome is SUCCESS; with neither, what the body
        recorded (:meth:`usage`, :meth:`fail`, :meth:`report`), else FAILED_UNKNOWN_USAGE.
        ``provider`` (default: the recorded one) is the provider's feedback. A second call returns
        the first answer.
        """
        return await self._release(self.explicit(usage, outcome, provider))

    async def extend(self, ttl_ms: int | None = None) -> int:
        """Pushes the expiry to ``ttl_ms`` (default: the lease's lifetime) from now; returns it."""
        ttl_ms = ttl_ms or self.keepalive_plan()[0]
        self.expires_at_ms = await self._client.extend(self.lease_id, ttl_ms)
        return self.expires_at_ms

    def delegate(self, usage: Usage | None = None, *, timeout: float | None = None) -> AcquireContext:
        """Releases this lease as failed (with ``usage`` if the provider counted any) and acquires
        on the rest of the escalation order: await it, or ``async with`` it. Raises
        :class:`CapacityExhausted` when no model is left.
        """

        async def hand_on() -> AsyncLease:
            await self._release(self.failure(usage))
            models, job_id = self.delegation()
            return await self._client.acquire(
                self.job_type,
                models=models,
                job_id=job_id,
                timeout=timeout,
                lease_ttl_ms=self.lease_ttl_ms,
                keepalive=self._keepalive is not None,
            )

        return AcquireContext(hand_on)

    def start_keepalive(self) -> None:
        """Starts a task on the running loop that extends the lease until it is released."""
        if self._keepalive is not None:
            return
        self._keepalive = asyncio.get_running_loop().create_task(
            self._keep_alive(*self.keepalive_plan()), name=f"rlclient-keepalive-{self.lease_id}"
        )

    async def _keep_alive(self, ttl_ms: int, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.extend(ttl_ms)
            except LeaseNotFound as gone:
                log.warning("lease %s is gone, keepalive stops: %s", self.lease_id, gone)
                return
            except RateLimitError as error:
                log.warning("could not extend lease %s, trying again in %.2fs: %s", self.lease_id, interval, error)

    async def _release(self, report: CallReport) -> ReleaseResult:
        async with self._lock:
            if self._result is not None:
                return self._result
            if self._keepalive is not None:
                # No extension may land after the release: the service would answer NOT_FOUND.
                self._keepalive.cancel()
                await asyncio.wait([self._keepalive])
            self._result = await self._client.release(self.lease_id, report.outcome, report.usage, report.provider)
            return self._result
