"""Wiring: the RateLimiter pass-through, grpc.health.v1 Health and server reflection on one server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from rlcommon.server import PLAIN, ServerSetup
from rlcommon.server_options import SERVER_OPTIONS
from rlcommon.watch_cap import DEFAULT_MAX_WATCH_STREAMS
from rlproxy.access import PLAINTEXT, TargetAccess
from rlproxy.forwarding import Forwarder
from rlproxy.metrics import NO_METRICS, ProxyMetrics
from rlproxy.policies import Policy
from rlproxy.targets import FIRST_ANSWER_TIMEOUT_S, RATE_LIMITER, Target, TargetPool

# least_loaded refreshes each target's open-lease count from GetAllocation this often; between
# refreshes it counts the leases it grants and releases itself.
LOAD_POLL_S: Final = 1.0
_HEALTH: Final = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
_SERVING: Final = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING: Final = health_pb2.HealthCheckResponse.NOT_SERVING


class ProxyServer:
    """The proxy's gRPC server; `poll_loads` keeps targets' open-lease counts fresh for least_loaded.

    `first_answer_timeout_s` bounds how long calls wait for a target's first health answer.
    """

    def __init__(
        self,
        targets: Sequence[str],
        policy: Policy,
        *,
        poll_loads: bool = False,
        first_answer_timeout_s: float = FIRST_ANSWER_TIMEOUT_S,
        setup: ServerSetup = PLAIN,
        access: TargetAccess = PLAINTEXT,
        metrics: ProxyMetrics = NO_METRICS,
        max_watch_streams: int = DEFAULT_MAX_WATCH_STREAMS,
    ) -> None:
        self._health = health_aio.HealthServicer()
        self._pool = TargetPool(targets, self._target_health, first_answer_timeout_s, access)
        self._poll_loads = poll_loads
        self._setup = setup
        # With SO_REUSEPORT a second process could bind the same port and silently take half the calls.
        self._server = aio.server(
            options=(*SERVER_OPTIONS, ("grpc.so_reuseport", 0)), interceptors=setup.interceptors(RATE_LIMITER) or None
        )
        forwarder = self.forwarder = Forwarder(self._pool, policy, metrics, max_watch_streams)
        self._server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    RATE_LIMITER,
                    {
                        "Acquire": grpc.unary_unary_rpc_method_handler(forwarder.acquire),
                        "Release": grpc.unary_unary_rpc_method_handler(forwarder.release),
                        "ExtendLease": grpc.unary_unary_rpc_method_handler(forwarder.extend_lease),
                        "GetAllocation": grpc.unary_unary_rpc_method_handler(forwarder.get_allocation),
                        "WatchAllocation": grpc.unary_stream_rpc_method_handler(forwarder.watch_allocation),
                    },
                ),
            )
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (RATE_LIMITER, _HEALTH, reflection.SERVICE_NAME),
            self._server,
        )

    @property
    def pool(self) -> TargetPool:
        return self._pool

    async def start(self, host: str, port: int) -> int:
        """Starts serving and returns the bound port (useful with port 0).

        Raises RuntimeError when the address cannot be bound.
        """
        bound = self._setup.bind(self._server, f"{host}:{port}")
        for service in (*(t.address for t in self._pool.targets), "", RATE_LIMITER):
            await self._health.set(service, _NOT_SERVING)
        await self._server.start()
        self._pool.start(LOAD_POLL_S if self._poll_loads else None)
        return bound

    async def stop(self, grace_s: float) -> None:
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace_s)
        await self._pool.close()

    async def _target_health(self, target: Target) -> None:
        # Each target's state is published under its address, so operators (and tests) can see
        # which targets the proxy is routing to.
        await self._health.set(target.address, _SERVING if target.serving else _NOT_SERVING)
        status = _SERVING if self._pool.healthy else _NOT_SERVING
        await self._health.set("", status)
        await self._health.set(RATE_LIMITER, status)
