"""An in-process RateLimiter with scripted failures, for testing the client's own logic.

It keeps one slot per model and refunds like the real service does within a window; the real
service is exercised by tests/e2e/test_client_python.py.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
from rlclient import RetryPolicy
from rlclient._proto import ratelimit_pb2 as pb
from rlclient._proto import ratelimit_pb2_grpc as pb_grpc

MODELS = ("m1", "m2", "m3")
ESTIMATE = 1000
TTL_MS = 60_000
# Short backoffs keep the retry tests fast; the bound on attempts is what they check.
FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)


@dataclass
class FakeLease:
    job_id: str
    model: str
    expires_at_ms: int
    released: pb.ReleaseResponse | None = None


@dataclass
class FakeLimiter(pb_grpc.RateLimiterServicer):
    free: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODELS, 1))
    # Calls still to answer UNAVAILABLE, per method name.
    unavailable: Counter[str] = field(default_factory=Counter)
    calls: list[tuple[str, object]] = field(default_factory=list)
    # The authorization metadata of each call, None when it had none.
    authorizations: list[str | None] = field(default_factory=list)
    leases: dict[str, FakeLease] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _enter(self, method: str, request: object, context: grpc.ServicerContext) -> None:
        self.calls.append((method, request))
        self.authorizations.append(dict(context.invocation_metadata()).get("authorization"))
        if self.unavailable[method] > 0:
            self.unavailable[method] -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "scripted outage")

    def count(self, method: str) -> int:
        return sum(1 for name, _ in self.calls if name == method)

    def Acquire(self, request: pb.AcquireRequest, context: grpc.ServicerContext) -> pb.AcquireResponse:
        with self._lock:
            self._enter("Acquire", request, context)
            if request.job_type != "summary":
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown job type {request.job_type!r}")
            for lease_id, lease in self.leases.items():
                if lease.job_id == request.job_id and lease.released is None:
                    return self._granted(lease_id, lease, [lease.model])
            order = list(request.models) or list(MODELS)
            tried = []
            for model in order:
                tried.append(model)
                if self.free[model] > 0:
                    self.free[model] -= 1
                    lease_id = f"lease-{next(self._ids)}"
                    ttl = request.lease_ttl_ms or TTL_MS
                    lease = FakeLease(request.job_id, model, int(time.time() * 1000) + ttl)
                    self.leases[lease_id] = lease
                    return self._granted(lease_id, lease, tried)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"all models exhausted: tried {', '.join(tried)}")

    def _granted(self, lease_id: str, lease: FakeLease, tried: list[str]) -> pb.AcquireResponse:
        return pb.AcquireResponse(
            lease_id=lease_id,
            model_id=lease.model,
            models_tried=tried,
            reserved=pb.Reservation(tokens=ESTIMATE, requests=1),
            lease_expires_at_ms=lease.expires_at_ms,
            instance_id="fake",
        )

    def Release(self, request: pb.ReleaseRequest, context: grpc.ServicerContext) -> pb.ReleaseResponse:
        with self._lock:
            self._enter("Release", request, context)
            lease = self.leases.get(request.lease_id)
            if lease is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"lease {request.lease_id} not found")
            if request.outcome == pb.OUTCOME_UNSPECIFIED:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "outcome is unspecified")
            if lease.released is None:
                used = request.actual.input_tokens + request.actual.output_tokens + request.actual.cached_tokens
                known = request.outcome != pb.FAILED_UNKNOWN_USAGE
                retry_after_ms = request.provider.retry_after_ms
                lease.released = pb.ReleaseResponse(
                    refunded_tokens=max(0, ESTIMATE - used) if known else 0,
                    overage_tokens=max(0, used - ESTIMATE) if known else 0,
                    same_window=True,
                    paused_until_ms=int(time.time() * 1000) + retry_after_ms if retry_after_ms > 0 else 0,
                )
                self.free[lease.model] += 1
            return lease.released

    def ExtendLease(self, request: pb.ExtendLeaseRequest, context: grpc.ServicerContext) -> pb.ExtendLeaseResponse:
        with self._lock:
            self._enter("ExtendLease", request, context)
            lease = self.leases.get(request.lease_id)
            if lease is None or lease.released is not None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"lease {request.lease_id} not found")
            lease.expires_at_ms = int(time.time() * 1000) + request.ttl_ms
            return pb.ExtendLeaseResponse(lease_expires_at_ms=lease.expires_at_ms)

    def GetAllocation(
        self, request: pb.GetAllocationRequest, context: grpc.ServicerContext
    ) -> pb.GetAllocationResponse:
        with self._lock:
            self._enter("GetAllocation", request, context)
            open_leases = sum(1 for lease in self.leases.values() if lease.released is None)
            return pb.GetAllocationResponse(instance_id="fake", active_leases=open_leases)


@contextmanager
def serve() -> Iterator[tuple[str, FakeLimiter]]:
    limiter = FakeLimiter()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_RateLimiterServicer_to_server(limiter, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", limiter
    finally:
        server.stop(grace=None)
