"""Prometheus metrics of the proxy: calls per target, method and status; target health at scrape time.

`NO_METRICS` stands in when `--metrics-port` is absent and records nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Final

import grpc
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rlcommon.metric_children import Children
from rlproxy.targets import Target

if TYPE_CHECKING:
    from rlproxy.forwarding import Forwarder

# The target label of calls the proxy answered itself (malformed request, no healthy target, ...).
NO_TARGET: Final = ""


class ProxyMetrics:
    """What the forwarder reports; this base records nothing."""

    def request(self, target: str, method: str, code: grpc.StatusCode) -> None:
        pass


NO_METRICS: Final = ProxyMetrics()


class PrometheusProxyMetrics(ProxyMetrics):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._requests = Children(
            Counter(
                "rlproxy_requests",
                "Calls sent to a target, by method and the target's status code (an Acquire tried on two "
                'targets counts on both); target="" counts the calls the proxy answered itself.',
                ("target", "method", "code"),
                registry=registry,
            )
        )

    def request(self, target: str, method: str, code: grpc.StatusCode) -> None:
        self._requests(target, method, code.name).inc()

    def watch(self, targets: Iterable[Target], forwarder: Forwarder) -> None:
        self.registry.register(TargetCollector(tuple(targets)))
        self.registry.register(WatchCollector(forwarder))


class WatchCollector(Collector):
    """The proxy's WatchAllocation streams, read when scraped (two integers the event loop replaces whole)."""

    def __init__(self, forwarder: Forwarder) -> None:
        self._forwarder = forwarder

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        clients = GaugeMetricFamily("rlproxy_watch_streams", "WatchAllocation streams of clients open on this proxy.")
        clients.add_metric((), self._forwarder.watch_streams.open)
        upstreams = GaugeMetricFamily(
            "rlproxy_watch_upstreams",
            "WatchAllocation streams this proxy has open to its targets: one per target, request and metadata, "
            "whatever the number of clients that follow it.",
        )
        upstreams.add_metric((), self._forwarder.watches.upstreams)
        yield from (clients, upstreams)


class TargetCollector(Collector):
    """rlproxy_target_healthy, read when scraped. The scrape runs on the HTTP server's thread and only
    reads one attribute per target, which the event loop replaces whole."""

    def __init__(self, targets: tuple[Target, ...]) -> None:
        self._targets = targets

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        healthy = GaugeMetricFamily(
            "rlproxy_target_healthy", "1 while the target's health is SERVING, else 0.", labels=("target",)
        )
        for target in self._targets:
            healthy.add_metric((target.address,), 1 if target.serving else 0)
        yield healthy
