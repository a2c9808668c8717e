"""The Prometheus /metrics endpoint both servers serve behind --metrics-port."""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, start_http_server

log = logging.getLogger(__name__)


def serve(registry: CollectorRegistry, host: str, port: int) -> Callable[[], None]:
    """Serves /metrics on a thread of its own; returns what stops it. Raises OSError when the port is taken."""
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        raise OSError(f"cannot serve metrics on {host}:{port}: {e}") from e
    log.info("metrics on http://%s:%d/metrics", host, server.server_port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return stop
