"""Blocking client: ``RateLimitClient`` and its ``Lease``."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Generator, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc

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


class RateLimitClient:
    """Talks to one ``rlservice`` instance or ``rlproxy`` over one channel. Safe to share across threads.

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
            grpc.secure_channel(target, credentials, options)
            if credentials is not None
            else grpc.insecure_channel(target, options)
        )
        self._stub = pb_grpc.RateLimiterStub(self._channel)
        self._retry = retry or RetryPolicy()
        self._rpc_timeout = rpc_timeout
        self._metadata = token_metadata(token)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RateLimitClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def acquire(
        self,
        job_type: str,
        *,
        models: Sequence[str] | None = None,
        job_id: str | None = None,
        timeout: float | None = None,
        lease_ttl_ms: int | None = None,
        keepalive: bool = False,
    ) -> Lease:
        """Waits for capacity and returns the lease; use it as a context manager to release it.

        ``models`` is the escalation order (None: the service's configured order). ``timeout`` in
        seconds caps the whole wait, retries included. With ``keepalive`` a background thread
        extends the lease until it is released.
        """
        job_id = job_id or str(uuid.uuid4())
        request = pb.AcquireRequest(
            job_id=job_id, job_type=job_type, models=list(models or ()), lease_ttl_ms=lease_ttl_ms or 0
        )
        response = self._call(self._stub.Acquire, request, deadline_after(timeout), self._retry)
        lease = Lease(self, response, job_type=job_type, job_id=job_id, models=models, lease_ttl_ms=lease_ttl_ms)
        if keepalive:
            lease.start_keepalive()
        return lease

    def release(
        self,
        lease_id: str,
        outcome: Outcome,
        usage: Usage | None = None,
        provider: ProviderFeedback | None = None,
    ) -> ReleaseResult:
        """Releases a lease by id, with the provider's feedback if any. Prefer ``Lease.release`` or
        the context manager."""
        request = release_request(lease_id, outcome, usage, provider)
        response = self._call(self._stub.Release, request, deadline_after(self._rpc_timeout), self._retry)
        return ReleaseResult.from_proto(response)

    def extend(self, lease_id: str, ttl_ms: int) -> int:
        """Pushes the lease's expiry to ``ttl_ms`` from now; returns the new expiry (epoch ms)."""
        request = pb.ExtendLeaseRequest(lease_id=lease_id, ttl_ms=ttl_ms)
        response = self._call(self._stub.ExtendLease, request, deadline_after(self._rpc_timeout), NO_RETRY)
        return response.lease_expires_at_ms

    def allocation(self, instance_id: str = "") -> pb.GetAllocationResponse:
        """The pools and job-type state of one instance (through a proxy: ``instance_id``, or any)."""
        request = pb.GetAllocationRequest(instance_id=instance_id)
        return self._call(self._stub.GetAllocation, request, deadline_after(self._rpc_timeout), NO_RETRY)

    def watch_allocation(
        self, instance_id: str = "", *, min_interval_ms: int = 0, timeout: float | None = None
    ) -> Generator[pb.GetAllocationResponse, None, None]:
        """Follows one instance's allocation: yields it at once, then again whenever its pools, ratios,
        in-flight or waiting counts change, at most once per ``min_interval_ms`` (0: the service's 200).

        Stop by closing the iterator (or leaving the ``for`` loop); ``timeout`` in seconds ends the
        iteration quietly. A slow reader gets the latest state, never a backlog.
        """
        request = pb.WatchAllocationRequest(instance_id=instance_id, min_interval_ms=min_interval_ms)
        call = self._stub.WatchAllocation(request, timeout=timeout, metadata=self._metadata)
        try:
            yield from call
        except grpc.RpcError as rpc_error:
            if timeout is not None and call.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return
            raise from_rpc_error(rpc_error) from rpc_error
        finally:
            # grpc-stubs leaves the streaming call's cancel() unannotated.
            call.cancel()  # type: ignore[no-untyped-call]

    def _call(self, method: Callable[..., Resp], request: Req, deadline: float | None, policy: RetryPolicy) -> Resp:
        failed = 0
        while True:
            try:
                return method(request, timeout=time_left(deadline), metadata=self._metadata)
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error)
                failed += 1
                delay = next_backoff(policy, error, failed, deadline)
                if delay is None:
                    raise error from rpc_error
                log.debug("retrying after %s (attempt %d) in %.3fs", error, failed, delay)
                time.sleep(delay)


class Lease(LeaseState):
    """A granted Acquire. As a context manager it releases itself when the block ends:

    - the block called :meth:`usage` → SUCCESS with that usage;
    - the block raised after :meth:`usage` → FAILED_WITH_USAGE with it;
    - the block called :meth:`report` (a provider adapter's reading of the answer or error) → that
      report's outcome, usage and feedback; a success the block raised after → FAILED_WITH_USAGE;
    - the block raised, or ended, without reporting usage → FAILED_UNKNOWN_USAGE (no refund).
    """

    def __init__(
        self,
        client: RateLimitClient,
        response: pb.AcquireResponse,
        *,
        job_type: str,
        job_id: str,
        models: Sequence[str] | None,
        lease_ttl_ms: int | None,
    ) -> None:
        super().__init__(response, job_type=job_type, job_id=job_id, models=models, lease_ttl_ms=lease_ttl_ms)
        self._client = client
        self._lock = threading.Lock()
        self._stop_keepalive = threading.Event()
        self._keepalive: threading.Thread | None = None

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.released:
            return
        report = self.on_exit(body_raised=exc is not None)
        if exc is None:
            self._release(report)
            return
        try:
            self._release(report)
        except RateLimitError as release_error:
            # The body's exception is the one the caller needs; the lease lapses at its TTL anyway.
            log.warning("could not release lease %s after the block failed: %s", self.lease_id, release_error)

    def release(
        self, usage: Usage | None = None, *, outcome: Outcome | None = None, provider: ProviderFeedback | None = None
    ) -> ReleaseResult:
        """Releases now. With ``usage`` alone the outcome is SUCCESS; with neither, what the body
        recorded (:meth:`usage`, :meth:`fail`, :meth:`report`), else FAILED_UNKNOWN_USAGE.
        ``provider`` (default: the recorded one) is the provider's feedback. A second call returns
        the first answer.
        """
        return self._release(self.explicit(usage, outcome, provider))

    def extend(self, ttl_ms: int | None = None) -> int:
        """Pushes the expiry to ``ttl_ms`` (default: the lease's lifetime) from now; returns it."""
        ttl_ms = ttl_ms or self.keepalive_plan()[0]
        self.expires_at_ms = self._client.extend(self.lease_id, ttl_ms)
        return self.expires_at_ms

    def delegate(self, usage: Usage | None = None, *, timeout: float | None = None) -> Lease:
        """Releases this lease as failed (with ``usage`` if the provider counted any) and acquires
        on the rest of the escalation order. Raises :class:`CapacityExhausted` when none is left.
        """
        self._release(self.failure(usage))
        models, job_id = self.delegation()
        return self._client.acquire(
            self.job_type,
            models=models,
            job_id=job_id,
            timeout=timeout,
            lease_ttl_ms=self.lease_ttl_ms,
            keepalive=self._keepalive is not None,
        )

    def start_keepalive(self) -> None:
        """Starts a daemon thread that extends the lease until it is released."""
        if self._keepalive is not None:
            return
        ttl_ms, interval = self.keepalive_plan()
        self._keepalive = threading.Thread(
            target=self._keep_alive,
            args=(ttl_ms, interval),
            name=f"rlclient-keepalive-{self.lease_id}",
            daemon=True,
        )
        self._keepalive.start()

    def _keep_alive(self, ttl_ms: int, interval: float) -> None:
        while not self._stop_keepalive.wait(interval):
            try:
                self.extend(ttl_ms)
            except LeaseNotFound as gone:
                log.warning("lease %s is gone, keepalive stops: %s", self.lease_id, gone)
                return
            except RateLimitError as error:
                log.warning("could not extend lease %s, trying again in %.2fs: %s", self.lease_id, interval, error)

    def _release(self, report: CallReport) -> ReleaseResult:
        with self._lock:
            if self._result is not None:
                return self._result
            # No extension may land after the release: the service would answer NOT_FOUND.
            self._stop_keepalive.set()
            if self._keepalive is not None:
                self._keepalive.join()
            self._result = self._client.release(self.lease_id, report.outcome, report.usage, report.provider)
            return self._result
