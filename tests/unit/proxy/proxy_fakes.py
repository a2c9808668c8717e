"""Tiny in-process RateLimiter instances for driving the proxy without Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from rlproto import ratelimit_pb2, ratelimit_pb2_grpc
from rlproxy.policies import Policy, RoundRobin
from rlproxy.server import ProxyServer
from rlproxy.targets import FIRST_ANSWER_TIMEOUT_S

RATE_LIMITER = "ratelimit.v1.RateLimiter"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class FakeInstance(ratelimit_pb2_grpc.RateLimiterServicer):
    """Grants every Acquire at once as `<instance_id>/<job_id>`, except for a few magic job ids.

    `fail:CODE:details` aborts with that status; `hang` waits until cancelled; every reply carries
    `x-instance` initial metadata and echoes the caller's `x-req` as `x-echo` trailing metadata.
    """

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.acquired: list[str] = []
        self.released: list[str] = []
        self.extended: list[str] = []
        self.allocations = 0
        self.watches = 0
        self.open: set[str] = set()
        self.metadata: list[dict[str, str | bytes]] = []
        self.time_remaining: list[float | None] = []
        self.hanging = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def _reply_metadata(self, context: aio.ServicerContext[object, object]) -> None:
        incoming = dict(context.invocation_metadata() or ())
        self.metadata.append(incoming)
        await context.send_initial_metadata((("x-instance", self.instance_id),))
        context.set_trailing_metadata((("x-echo", incoming.get("x-req", "")),))

    async def Acquire(
        self, request: ratelimit_pb2.AcquireRequest, context: aio.ServicerContext[object, object]
    ) -> ratelimit_pb2.AcquireResponse:
        self.acquired.append(request.job_id)
        self.time_remaining.append(context.time_remaining())
        if request.job_id.startswith("fail:"):
            _, code, details = request.job_id.split(":", 2)
            self.metadata.append(dict(context.invocation_metadata() or ()))
            await context.abort(grpc.StatusCode[code], details, (("x-instance", self.instance_id),))
        if request.job_id == "hang":
            self.hanging.set()
            try:
                await asyncio.Event().wait()
            finally:
                self.cancelled.set()
        await self._reply_metadata(context)
        lease_id = f"{self.instance_id}/{request.job_id}"
        self.open.add(lease_id)
        return ratelimit_pb2.AcquireResponse(lease_id=lease_id, instance_id=self.instance_id, model_id="m")

    async def Release(
        self, request: ratelimit_pb2.ReleaseRequest, context: aio.ServicerContext[object, object]
    ) -> ratelimit_pb2.ReleaseResponse:
        self.released.append(request.lease_id)
        if request.lease_id not in self.open:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown lease {request.lease_id}")
        self.open.discard(request.lease_id)
        await self._reply_metadata(context)
        return ratelimit_pb2.ReleaseResponse(refunded_tokens=7, same_window=True)

    async def ExtendLease(
        self, request: ratelimit_pb2.ExtendLeaseRequest, context: aio.ServicerContext[object, object]
    ) -> ratelimit_pb2.ExtendLeaseResponse:
        self.extended.append(request.lease_id)
        if request.lease_id not in self.open:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown lease {request.lease_id}")
        return ratelimit_pb2.ExtendLeaseResponse(lease_expires_at_ms=request.ttl_ms)

    async def GetAllocation(
        self, request: ratelimit_pb2.GetAllocationRequest, context: aio.ServicerContext[object, object]
    ) -> ratelimit_pb2.GetAllocationResponse:
        self.allocations += 1
        return ratelimit_pb2.GetAllocationResponse(instance_id=self.instance_id, active_leases=len(self.open))

    async def WatchAllocation(
        self, request: ratelimit_pb2.WatchAllocationRequest, context: aio.ServicerContext[object, object]
    ) -> AsyncIterator[ratelimit_pb2.GetAllocationResponse]:
        """Three messages numbered in active_leases, then the stream ends; min_interval_ms 1 aborts,
        min_interval_ms 2 keeps the stream open after them until cancelled."""
        self.watches += 1
        if request.min_interval_ms == 1:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "min_interval_ms too small")
        await self._reply_metadata(context)
        for n in range(3):
            yield ratelimit_pb2.GetAllocationResponse(instance_id=self.instance_id, active_leases=n)
        if request.min_interval_ms == 2:
            try:
                await asyncio.Event().wait()
            finally:
                self.cancelled.set()


class HeldHealth:
    """grpc.health.v1 that answers only once `answering` is set, as an instance too busy to answer
    yet would: connections are taken, health calls wait."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.answering = asyncio.Event()
        self.answering.set()

    async def Check(self, request: Any, context: aio.ServicerContext[object, object]) -> Any:
        await self.answering.wait()
        return await self._inner.Check(request, context)

    async def Watch(self, request: Any, context: aio.ServicerContext[object, object]) -> None:
        await self.answering.wait()
        await self._inner.Watch(request, context)

    def __getattr__(self, name: str) -> Any:
        # Methods of the health service that the proxy does not call (List) are served as they are.
        return getattr(self._inner, name)


class FakeServer:
    """A FakeInstance served with grpc.health.v1 on 127.0.0.1, its status set under `health_name`.

    `answering` (set at first) holds health answers back while it is clear.
    """

    def __init__(self, instance_id: str, health_name: str = RATE_LIMITER) -> None:
        self.instance = FakeInstance(instance_id)
        self.health_name = health_name
        self.health = health_aio.HealthServicer()
        self._held = HeldHealth(self.health)
        self.answering = self._held.answering
        self.port = 0
        self._server: aio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> FakeServer:
        server = aio.server()
        ratelimit_pb2_grpc.add_RateLimiterServicer_to_server(self.instance, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._held, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{port}")
        await self.set_serving(True)
        await server.start()
        self._server = server
        return self

    async def set_serving(self, serving: bool) -> None:
        status = _SERVING if serving else _NOT_SERVING
        await self.health.set(self.health_name, status)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
            self._server = None


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition") -> None:
    """Polls `predicate` until it holds, failing the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


class Proxy:
    """An in-process proxy and a client stub talking to it."""

    def __init__(self, server: ProxyServer, port: int) -> None:
        self.server = server
        self.port = port
        self.channel = aio.insecure_channel(f"127.0.0.1:{port}")
        self.stub = ratelimit_pb2_grpc.RateLimiterStub(self.channel)

    async def ready(self) -> None:
        """Waits until every target is SERVING and its instance id is known."""
        await wait_until(
            lambda: all(t.serving and t.instance_id for t in self.server.pool.targets),
            what="all targets serving through the proxy",
        )

    async def close(self) -> None:
        await self.channel.close(None)
        await self.server.stop(0)


class ProxyMaker:
    def __init__(self) -> None:
        self._proxies: list[Proxy] = []

    async def __call__(
        self,
        targets: Sequence[FakeServer | str],
        policy: Policy | None = None,
        *,
        ready: bool = True,
        first_answer_timeout_s: float = FIRST_ANSWER_TIMEOUT_S,
    ) -> Proxy:
        """A proxy in front of `targets`: fakes, or addresses (where nothing need listen)."""
        addresses = [t if isinstance(t, str) else t.address for t in targets]
        server = ProxyServer(addresses, policy or RoundRobin(), first_answer_timeout_s=first_answer_timeout_s)
        proxy = Proxy(server, await server.start("127.0.0.1", 0))
        self._proxies.append(proxy)
        if ready:
            await proxy.ready()
        return proxy

    async def close(self) -> None:
        for proxy in self._proxies:
            await proxy.close()
