"""Prometheus metrics of one instance: counters where the calls are answered, gauges read at scrape time.

`NO_METRICS` stands in when `--metrics-port` is absent, so the call sites stay the same and cost one
empty method call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rlcommon.metric_children import Children
from rlcommon.watch_cap import StreamCap

from .backend.ledger import ClosedLease
from .results import AllocationReport
from .types import RATE_DIMS

# A wait runs up to the next minute boundary + 5 s by default.
WAIT_BUCKETS: Final = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 65.0)
# A script takes tens of microseconds inside Redis; the rest is the round trip and the client.
REDIS_BUCKETS: Final = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
# A scrape waits this long for the event loop to hand over the allocation.
SCRAPE_TIMEOUT_S: Final = 5.0
# The per-minute dimensions whose pools are gauges (rlservice_pool_<dimension>), with their help.
_POOL_GAUGES: Final = {
    RATE_DIMS.index(name): f"{what} this instance may still take on the model this minute ({which})."
    for name, what, which in (
        ("tokens_per_minute", "Tokens", "models limited per minute"),
        ("requests_per_minute", "Requests", "models limited per minute"),
        ("input_tokens_per_minute", "Input tokens", "models that limit input tokens apart"),
        ("output_tokens_per_minute", "Output tokens", "models that limit output tokens apart"),
    )
}


class ServiceMetrics:
    """What the servicer and the ledger report; this base records nothing."""

    def acquired(self, model: str, job_type: str, waited_ms: int) -> None:
        pass

    def acquire_failed(self, model: str, job_type: str, result: str) -> None:
        pass

    def released(self, closed: ClosedLease) -> None:
        pass

    def release_failed(self, outcome: str) -> None:
        pass

    def watch_refused(self) -> None:
        pass


NO_METRICS: Final = ServiceMetrics()


class PrometheusMetrics(ServiceMetrics):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._acquire = Children(
            Counter(
                "rlservice_acquire",
                "Acquire calls answered, by result: granted, exhausted, deadline, invalid, denied, unavailable, "
                "cancelled (the caller left) or error. For errors, model is the first model of the order "
                "(empty when the request named an unknown one) and job_type is empty when unknown. Calls "
                "refused for their token or because they do not parse are not counted.",
                ("model", "job_type", "result"),
                registry=registry,
            )
        )
        self._wait = Children(
            Histogram(
                "rlservice_acquire_wait_seconds",
                "Time granted Acquires spent queued or escalating (0 for a grant that never queued).",
                ("model", "job_type"),
                buckets=WAIT_BUCKETS,
                registry=registry,
            )
        )
        self._release = Children(
            Counter(
                "rlservice_release",
                "Release calls answered, by the lease's outcome (success, failed_with_usage, "
                "failed_unknown_usage, rate_limited), or by error (not_found, invalid, denied, unavailable, "
                "cancelled, error) with empty model and job_type. A repeated Release counts again.",
                ("model", "job_type", "outcome"),
                registry=registry,
            )
        )
        self._refunded = Children(
            Counter(
                "rlservice_refunded_tokens",
                "Tokens given back by Releases whose usage was under the estimate.",
                ("model",),
                registry=registry,
            )
        )
        self._overage = Children(
            Counter(
                "rlservice_overage_tokens",
                "Tokens used beyond the estimate, as reported by Releases.",
                ("model",),
                registry=registry,
            )
        )
        self._watch_refused = Counter(
            "rlservice_watch_refused",
            "WatchAllocation streams refused with RESOURCE_EXHAUSTED: the instance served --max-watch-streams already.",
            registry=registry,
        )
        self._redis = Children(
            Histogram(
                "rlservice_redis_call_seconds",
                "Ledger script calls, round trip included, by script.",
                ("script",),
                buckets=REDIS_BUCKETS,
                registry=registry,
            )
        )

    def acquired(self, model: str, job_type: str, waited_ms: int) -> None:
        self._acquire(model, job_type, "granted").inc()
        self._wait(model, job_type).observe(waited_ms / 1000)

    def acquire_failed(self, model: str, job_type: str, result: str) -> None:
        self._acquire(model, job_type, result).inc()

    def released(self, closed: ClosedLease) -> None:
        self._release(closed.model, closed.job_type, closed.outcome.name.lower()).inc()
        if closed.refunded_tokens:
            self._refunded(closed.model).inc(closed.refunded_tokens)
        if closed.overage_tokens:
            self._overage(closed.model).inc(closed.overage_tokens)

    def release_failed(self, outcome: str) -> None:
        self._release("", "", outcome).inc()

    def watch_refused(self) -> None:
        self._watch_refused.inc()

    def redis_call(self, script: str, seconds: float) -> None:
        self._redis(script).observe(seconds)

    def watch(self, models: Iterable[str], report: Callable[[], AllocationReport]) -> None:
        """Publishes the allocation's gauges, read on the running event loop at each scrape."""
        for model in models:
            self._refunded(model)
            self._overage(model)
        self.registry.register(AllocationCollector(report, asyncio.get_running_loop()))

    def watch_streams(self, cap: StreamCap) -> None:
        self.registry.register(StreamsCollector(cap))


class StreamsCollector(Collector):
    """rlservice_watch_streams, read when scraped: one attribute the event loop replaces whole."""

    def __init__(self, cap: StreamCap) -> None:
        self._cap = cap

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        open_streams = GaugeMetricFamily("rlservice_watch_streams", "WatchAllocation streams open on this instance.")
        open_streams.add_metric((), self._cap.open)
        limit = GaugeMetricFamily("rlservice_watch_streams_max", "Its --max-watch-streams.")
        limit.add_metric((), self._cap.limit)
        yield from (open_streams, limit)


class AllocationCollector(Collector):
    """Gauges read from the allocation report when scraped: nothing runs on the Acquire path.

    The scrape runs on the HTTP server's thread, while the limiter's state belongs to the event loop:
    the report is built on the loop and handed over.
    """

    def __init__(self, report: Callable[[], AllocationReport], loop: asyncio.AbstractEventLoop) -> None:
        """Made on the loop's own thread."""
        self._report = report
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def describe(self) -> Iterable[Metric]:
        # Registering must not build a report (it may happen on the loop itself).
        return ()

    def _fetch(self) -> AllocationReport | None:
        if threading.get_ident() == self._loop_thread:
            return self._report()

        async def build() -> AllocationReport:
            return self._report()

        if self._loop.is_closed():
            return None
        future = asyncio.run_coroutine_threadsafe(build(), self._loop)
        try:
            return future.result(SCRAPE_TIMEOUT_S)
        except TimeoutError:
            future.cancel()
            return None

    def collect(self) -> Iterator[Metric]:
        report = self._fetch()
        if report is None:
            return
        per_model = ("model",)
        per_type = ("model", "job_type")
        rates = {
            dim: GaugeMetricFamily(f"rlservice_pool_{RATE_DIMS[dim]}", help, labels=per_model)
            for dim, help in _POOL_GAUGES.items()
        }
        slots = GaugeMetricFamily("rlservice_pool_slots", "The pool's total slots on this instance.", labels=per_model)
        paused = GaugeMetricFamily(
            "rlservice_paused_until_ms",
            "Redis time (ms) until which a provider's 429 pauses the model on every instance; 0 when not paused.",
            labels=per_model,
        )
        external = GaugeMetricFamily(
            "rlservice_external_tokens",
            "Tokens of the model's current minute window that the provider reported and no lease accounts for.",
            labels=per_model,
        )
        outside = GaugeMetricFamily(
            "rlservice_outside_tokens_per_minute",
            "Tokens a minute a rolling model estimates others use of the key: its bucket refills that much slower.",
            labels=per_model,
        )
        for model, pool in report.pools.items():
            for dim, gauge in rates.items():
                if (amount := pool.rates[dim]) is not None:
                    gauge.add_metric((model,), amount)
            if pool.rates[0] is not None:
                external.add_metric((model,), pool.external[0])
                outside.add_metric((model,), pool.outside[0])
            slots.add_metric((model,), pool.total_slots)
            paused.add_metric((model,), pool.paused_until_ms)
        in_flight = GaugeMetricFamily("rlservice_in_flight", "Open leases of the type on the model.", labels=per_type)
        waiting = GaugeMetricFamily("rlservice_waiting", "Acquires queued for the type on the model.", labels=per_type)
        allocated = GaugeMetricFamily(
            "rlservice_allocated_slots", "Slots of the model's pool the type may hold.", labels=per_type
        )
        ratio = GaugeMetricFamily(
            "rlservice_job_type_ratio",
            "The type's current share of this instance's pools (ratios are per instance and type: the same "
            "on every model).",
            labels=per_type,
        )
        for model, rows in report.model_job_types.items():
            for job_type, row in rows.items():
                labels = (model, job_type)
                in_flight.add_metric(labels, row.in_flight)
                waiting.add_metric(labels, row.waiting)
                allocated.add_metric(labels, row.allocated_slots)
                ratio.add_metric(labels, report.job_types[job_type].current_ratio)
        instances = GaugeMetricFamily("rlservice_instances", "Live instances sharing the capacity (N).")
        instances.add_metric((), report.instance_count)
        leases = GaugeMetricFamily("rlservice_active_leases", "Open leases issued by this instance.")
        leases.add_metric((), report.active_leases)
        yield from (*rates.values(), slots, paused, external, outside, in_flight, waiting, allocated, ratio)
        yield from (instances, leases)
