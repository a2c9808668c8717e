"""Wiring: the gRPC server with health and reflection, the ledger, heartbeats, rebalancing, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from rlcommon.metrics_http import serve as serve_metrics
from rlcommon.server import PLAIN, ServerSetup
from rlcommon.server_options import SERVER_OPTIONS
from rlcommon.watch_cap import DEFAULT_MAX_WATCH_STREAMS
from rlproto import ratelimit_pb2

from .api import RateLimiterServicer, add_to_server
from .backend.events import EventStream
from .backend.ledger import FeedbackPolicy, LedgerUnavailable
from .backend.ledgers import connect
from .config import Settings
from .limiter import Limiter
from .metrics import NO_METRICS, PrometheusMetrics

log = logging.getLogger(__name__)

SERVICE_NAME = ratelimit_pb2.DESCRIPTOR.services_by_name["RateLimiter"].full_name
SHUTDOWN_GRACE_S = 2.0
REGISTER_RETRY_S = 0.5


@dataclass(frozen=True)
class Options:
    host: str
    port: int
    settings: Settings
    redis_url: str
    instance_id: str | None
    key_prefix: str
    setup: ServerSetup = PLAIN
    metrics_port: int | None = None
    max_watch_streams: int = DEFAULT_MAX_WATCH_STREAMS
    # --redis-url names one node of a Redis Cluster (backend/ledgers.py).
    redis_cluster: bool = False


def _status(serving: bool) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
    return health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING


def host_available_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    raise RuntimeError("MemAvailable not found in /proc/meminfo")


def memory_capacity_kb(settings: Settings) -> int | None:
    mem = settings.memory
    if mem is None:
        return None
    if mem.capacity_kb is not None:
        return mem.capacity_kb
    assert mem.free_memory_ratio is not None
    return int(host_available_kb() * mem.free_memory_ratio)


class Instance:
    def __init__(self, opts: Options) -> None:
        self._opts = opts
        self._server = grpc.aio.server(
            options=SERVER_OPTIONS, interceptors=opts.setup.interceptors(SERVICE_NAME) or None
        )
        self._health = health_aio.HealthServicer()
        self.port = opts.setup.bind(self._server, f"{opts.host}:{opts.port}")
        if self.port == 0:
            raise OSError(f"cannot bind {opts.host}:{opts.port}")
        instance_id = opts.instance_id or f"{socket.gethostname()}-{self.port}-{secrets.token_hex(3)}"
        self._prometheus = PrometheusMetrics(CollectorRegistry()) if opts.metrics_port is not None else None
        metrics = self._prometheus or NO_METRICS
        self._stop_metrics: Callable[[], None] | None = None
        # Without metrics the ledger times nothing.
        observe = self._prometheus.redis_call if self._prometheus is not None else None
        settings = opts.settings
        feedback = FeedbackPolicy(
            settings.provider_feedback.max_pause_ms,
            settings.provider_feedback.default_pause_ms,
            settings.feedback_tolerance(),
            settings.provider_feedback.outside_rate_time_constant_ms,
        )
        self._backend = connect(
            opts.redis_url,
            opts.redis_cluster,
            opts.key_prefix,
            instance_id,
            settings.models,
            settings.stale_after_ms,
            observe,
            feedback,
        )
        self.limiter = Limiter(opts.settings, self._backend.ledger, memory_capacity_kb(opts.settings))
        self._events = [
            EventStream(
                self._backend.events_redis,
                channel,
                instance_id,
                self.limiter.on_event,
                self.limiter.resubscribed,
                self._ledger_lost,
            )
            for channel in self._backend.channels
        ]
        self._servicer = RateLimiterServicer(self.limiter, metrics, opts.max_watch_streams)
        add_to_server(self._servicer, self._server, opts.setup)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self._server,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._serving = False
        self._down: list[str] = []
        # Set when Redis looks gone between heartbeats: the next check of Redis is due at once.
        self._probe = asyncio.Event()

    async def _set_serving(self, serving: bool) -> None:
        """The server's health, and each model's under SERVICE_NAME/MODEL: on a Redis Cluster, the
        models of a shard that is down are NOT_SERVING while the others serve."""
        self._serving = serving
        await self._health.set("", _status(serving))
        await self._health.set(SERVICE_NAME, _status(serving))
        down = self._backend.ledger.unreachable()
        if down != self._down:
            if down:
                log.warning("Redis unreachable for models %s; the others keep serving", ", ".join(down))
            else:
                log.info("every model's ledger answers again")
            self._down = down
        for model in self._opts.settings.models:
            await self._health.set(f"{SERVICE_NAME}/{model}", _status(serving and model not in down))

    async def start(self) -> None:
        await self._set_serving(False)
        if self._prometheus is not None and self._opts.metrics_port is not None:
            self._prometheus.watch(self.limiter.models, self.limiter.allocation)
            self._prometheus.watch_streams(self._servicer.watch_streams)
            self._stop_metrics = serve_metrics(self._prometheus.registry, self._opts.host, self._opts.metrics_port)
        await self._server.start()
        self._tasks.append(asyncio.create_task(self._keep_registered(), name="heartbeat"))

    async def _keep_registered(self) -> None:
        """Registers (retrying while Redis is unreachable), then heartbeats; health follows Redis."""
        settings = self._opts.settings
        while True:
            try:
                for events in self._events:
                    await events.start()
                await self.limiter.start()
                break
            except LedgerUnavailable as e:
                log.warning("Redis unreachable, not serving yet: %s", e)
                await self._stop_events()
                await asyncio.sleep(REGISTER_RETRY_S)
        log.info("registered as %s", self.limiter.instance_id)
        await self._set_serving(True)
        self._tasks.append(asyncio.create_task(self._rebalance(), name="rebalance"))
        while True:
            # While Redis is away, look again often: service resumes within that of its return.
            interval = settings.heartbeat_interval_ms / 1000 if self._serving else REGISTER_RETRY_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._probe.wait(), interval)
            self._probe.clear()
            try:
                await self.limiter.heartbeat()
            except LedgerUnavailable as e:
                log.warning("heartbeat failed, not serving: %s", e)
                await self._set_serving(False)
            else:
                await self._set_serving(True)

    async def _ledger_lost(self) -> None:
        """The event channel drops the moment Redis goes away: stop taking traffic now rather than at
        the next heartbeat, and check Redis at once (it may have been a dropped connection only)."""
        await self._set_serving(False)
        self._probe.set()

    async def _rebalance(self) -> None:
        interval = self._opts.settings.ratio_adjustment.adjustment_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            self.limiter.rebalance()

    async def _stop_events(self) -> None:
        for events in self._events:
            await events.stop()

    async def stop(self) -> None:
        """Stops accepting and leaves the ledger at once, so that the others re-divide while the
        calls still running get a short grace period."""
        await self._set_serving(False)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        draining = asyncio.create_task(self._server.stop(SHUTDOWN_GRACE_S))
        await self.limiter.close()
        await draining
        await self._stop_events()
        await self._backend.aclose()
        if self._stop_metrics is not None:
            await asyncio.to_thread(self._stop_metrics)


async def serve(opts: Options) -> None:
    instance = Instance(opts)
    await instance.start()
    opts.setup.reload_on_sighup()
    print(f"listening on {opts.host}:{instance.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await instance.stop()
