"""Prometheus metrics: two instances and the proxy serve /metrics; a known load, then exact values."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import grpc.aio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rllocal.processes import free_port
from rlproto import ratelimit_pb2 as pb

from .harness import Harness, eventually

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
TPM = 100_000
SMALL, OTHER = 1000, 500


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a series never created (a counter nothing incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scraped(port: int) -> Samples:
    return await asyncio.to_thread(scrape, port)


async def test_metrics_count_what_the_load_did(harness: Harness) -> None:
    await harness.within_one_window(seconds=15)
    ports = [free_port() for _ in range(3)]
    a = harness.boot_instance(0, "metrics", extra_args=["--metrics-port", str(ports[0])])
    b = harness.boot_instance(0, "metrics", extra_args=["--metrics-port", str(ports[1])])
    proxy = harness.boot_proxy([a.port, b.port], extra_args=["--metrics-port", str(ports[2])])
    await eventually(lambda: harness.counts_instances(a.port, 2), what="A to count two instances")

    # Directly on A: three grants released with a refund, an overage and unknown usage.
    leases = [await harness.acquire(a.port, "small") for _ in range(3)]
    assert {lease.model_id for lease in leases} == {"m-tpm"}
    refund = await harness.release(a.port, leases[0].lease_id, actual=pb.Usage(input_tokens=400, output_tokens=100))
    over = await harness.release(a.port, leases[1].lease_id, actual=pb.Usage(input_tokens=1500, output_tokens=200))
    await harness.release(a.port, leases[2].lease_id, outcome=pb.FAILED_UNKNOWN_USAGE)
    assert (refund.refunded_tokens, over.overage_tokens) == (500, 700)
    # m-conc allows 2 at once, so 1 per instance: a second Acquire there is exhausted (no wait).
    held = await harness.acquire(a.port, "small", models=["m-conc"])
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as exhausted:
            await harness.acquire(a.port, "small", models=["m-conc"])
        assert exhausted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await harness.acquire(a.port, "nope")
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await harness.release(a.port, f"{a.instance_id}/never-issued")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    # Through the proxy: four Acquires (round robin: two per instance), their Releases at no
    # refund, and one malformed Release the proxy answers itself.
    through = [await harness.acquire(proxy.port, "other") for _ in range(4)]
    assert sorted(lease.instance_id for lease in through) == sorted([a.instance_id] * 2 + [b.instance_id] * 2)
    for lease in through:
        await harness.release(proxy.port, lease.lease_id, actual=pb.Usage(input_tokens=OTHER))
    with pytest.raises(grpc.aio.AioRpcError) as malformed:
        await harness.release(proxy.port, "no-slash")
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # Half of what the settled usage leaves of m-tpm: 500 + 1700 + 1000 (the estimate, for unknown
    # usage) on A and the four proxied jobs of 500.
    expected_pool = (TPM - (500 + 1700 + SMALL + 4 * OTHER)) // 2

    async def settled() -> Samples:
        s = await scraped(ports[0])
        return s if value(s, "rlservice_pool_tokens_per_minute", model="m-tpm") == expected_pool else {}

    s = await eventually(settled, what=f"A's m-tpm pool to reach {expected_pool}")
    counter = "rlservice_acquire_total"
    assert value(s, counter, model="m-tpm", job_type="small", result="granted") == 3
    assert value(s, counter, model="m-conc", job_type="small", result="granted") == 1
    assert value(s, counter, model="m-conc", job_type="small", result="exhausted") == 2
    assert value(s, counter, model="m-tpm", job_type="", result="invalid") == 1
    assert value(s, counter, model="m-tpm", job_type="other", result="granted") == 2
    assert sum(v for (name, _), v in s.items() if name == counter) == 3 + 1 + 2 + 1 + 2
    wait = "rlservice_acquire_wait_seconds_count"
    assert value(s, wait, model="m-tpm", job_type="small") == 3
    assert value(s, wait, model="m-conc", job_type="small") == 1
    assert value(s, "rlservice_acquire_wait_seconds_sum", model="m-tpm", job_type="small") == 0

    release = "rlservice_release_total"
    assert value(s, release, model="m-tpm", job_type="small", outcome="success") == 2
    assert value(s, release, model="m-tpm", job_type="small", outcome="failed_unknown_usage") == 1
    assert value(s, release, model="m-tpm", job_type="other", outcome="success") == 2
    assert value(s, release, model="", job_type="", outcome="not_found") == 1
    assert value(s, "rlservice_refunded_tokens_total", model="m-tpm") == 500
    assert value(s, "rlservice_overage_tokens_total", model="m-tpm") == 700
    assert value(s, "rlservice_refunded_tokens_total", model="m-conc") == 0

    assert value(s, "rlservice_instances") == 2
    # The reported pool is the seed's share of concurrency, floor(2 / 2), held or not.
    assert value(s, "rlservice_pool_slots", model="m-conc") == 1
    assert value(s, "rlservice_in_flight", model="m-conc", job_type="small") == 1
    assert value(s, "rlservice_in_flight", model="m-tpm", job_type="small") == 0
    assert value(s, "rlservice_waiting", model="m-conc", job_type="small") == 0
    assert value(s, "rlservice_active_leases") == 1
    ratios = [value(s, "rlservice_job_type_ratio", model="m-tpm", job_type=t) for t in ("small", "other")]
    assert sum(ratios) == pytest.approx(1.0) and all(r > 0 for r in ratios)
    # Every Release reached the ledger, the unknown lease's too (3 + 1 + 2 through the proxy).
    assert value(s, "rlservice_redis_call_seconds_count", script="release") == 6
    assert value(s, "rlservice_redis_call_seconds_count", script="register") >= 1
    assert value(s, "rlservice_redis_call_seconds_count", script="acquire") >= 3 + 1 + 2

    p = await scraped(ports[2])
    requests = "rlproxy_requests_total"
    for instance in (a, b):
        assert value(p, requests, target=instance.address, method="Acquire", code="OK") == 2
        assert value(p, requests, target=instance.address, method="Release", code="OK") == 2
        assert value(p, "rlproxy_target_healthy", target=instance.address) == 1
    assert value(p, requests, target="", method="Release", code="INVALID_ARGUMENT") == 1
    assert sum(v for (name, _), v in p.items() if name == requests) == 9

    harness.kill_instance(b.port)

    async def b_unhealthy() -> bool:
        return value(await scraped(ports[2]), "rlproxy_target_healthy", target=b.address) == 0

    await eventually(b_unhealthy, what="the proxy to report B unhealthy")
    assert value(await scraped(ports[2]), "rlproxy_target_healthy", target=a.address) == 1

    await harness.release(a.port, held.lease_id, actual=pb.Usage(input_tokens=1))
    s = await scraped(ports[0])
    assert value(s, "rlservice_in_flight", model="m-conc", job_type="small") == 0
    assert value(s, "rlservice_pool_slots", model="m-conc") == 1


@contextmanager
def socket_bound(port: int) -> Iterator[None]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield


async def test_metrics_are_off_without_the_flag_and_a_taken_port_fails_the_start(harness: Harness) -> None:
    instance = harness.boot_instance(0, "metrics")
    assert "metrics on" not in instance.log.read_text()
    taken = free_port()
    with socket_bound(taken):
        with pytest.raises(RuntimeError, match=f"cannot serve metrics on 127.0.0.1:{taken}"):
            harness.boot_instance(0, "metrics", extra_args=["--metrics-port", str(taken)])
        with pytest.raises(RuntimeError, match=f"cannot serve metrics on 127.0.0.1:{taken}"):
            harness.boot_proxy([instance.port], extra_args=["--metrics-port", str(taken)])
