"""Redis failing under the instances: killed under load, back with its data (append-only file), back
empty, and reached over TLS. Each test runs its own Redis, so the session's is never touched: one
redis-server, or (the tests marked `ledgers`, a second time) a Redis Cluster, where the Redis that
fails is the master serving the model's slot."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2

from rllocal.ledger_view import MINUTE_MS
from rllocal.redis_cluster import LocalCluster, NodeSettings
from rlproto import ratelimit_pb2 as pb

from .harness import Harness, Process, RedisServer, eventually, health
from .tls_relay import TlsRelay, redis_certificate

# TPM 100 000 and one job type of 10 000 tokens: ten jobs per minute window across all instances.
PRESET = "instanceScaling"
MODEL, JOB = "scale-model", "scaleJob"
LIMIT_TOKENS = 100_000
JOB_TOKENS = 10_000
# No waiting: a job that does not fit is refused at once, so that every call's outcome is immediate.
NO_WAIT = {"job_types": {JOB: {"max_wait_ms": {MODEL: 0}}}}
TTL_MS = 600_000
# The service must resume within this of Redis's return (the operations guide promises it).
RECOVERY_S = 5.0
CALL_DEADLINE_S = 5.0
# A small job's real use: released with it, most of the estimate comes back, so the load goes on.
SMALL_USE = pb.Usage(request_count=1, input_tokens=60, output_tokens=40)


class ModelRedis(Protocol):
    """The Redis that holds the model's ledger, as the tests make it fail."""

    def stop(self) -> None: ...

    def restart(self, empty: bool = False) -> None: ...


@pytest.fixture
async def fault_harness(backend: str, tmp_path: Path) -> AsyncIterator[Harness]:
    """A harness on a Redis of the test's own, with an append-only file fsynced on every write (so that
    a kill loses nothing and the test is deterministic): one redis-server, or a cluster of three
    masters with no replica (nothing takes over while the model's master is down)."""
    data = tmp_path / "redis"
    data.mkdir()
    server = RedisServer(data, appendfsync="always")
    cluster = (
        LocalCluster(tmp_path / "cluster", settings=NodeSettings(appendfsync="always"))
        if backend == "cluster"
        else None
    )
    if cluster is not None:
        cluster.start()
    else:
        server.start()
    h = Harness(server, tmp_path, redis_cluster=cluster)
    try:
        yield h
    finally:
        h.teardown_infrastructure()
        await h.close_channels()
        server.stop()
        if cluster is not None:
            cluster.stop()


@pytest.fixture
def model_redis(fault_harness: Harness) -> ModelRedis:
    if fault_harness.redis_cluster is None:
        return fault_harness.redis_server
    return fault_harness.redis_cluster.master_of(fault_harness.key(MODEL))


async def all_health(ports: list[int], status: int) -> bool:
    return all([await health(p) == status for p in ports])


async def serves_a_job(h: Harness, port: int) -> bool:
    """A job gets through on that port: Acquire and Release both answered OK."""
    try:
        lease = await h.acquire(port, JOB, timeout=2, lease_ttl_ms=TTL_MS)
        await h.release(port, lease.lease_id, actual=SMALL_USE)
    except grpc.aio.AioRpcError:
        return False
    return True


def boot(h: Harness, count: int) -> list[Process]:
    return [h.boot_instance(0, PRESET, NO_WAIT) for _ in range(count)]


@dataclass
class Tally:
    """What the load saw: each call's status code, and the calls that outlived their deadline."""

    codes: Counter[str] = field(default_factory=Counter)
    late: list[float] = field(default_factory=list)
    granted: int = 0
    leases: set[str] = field(default_factory=set)

    def note(self, what: str, code: grpc.StatusCode, elapsed: float) -> None:
        self.codes[f"{what} {code.name}"] += 1
        if elapsed > CALL_DEADLINE_S + 1:
            self.late.append(elapsed)


async def load(h: Harness, port: int, stop: asyncio.Event, tally: Tally) -> None:
    """Acquire, hold a moment, Release (retried until the ledger answers), until told to stop."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            lease = await h.acquire(port, JOB, timeout=CALL_DEADLINE_S, lease_ttl_ms=TTL_MS)
        except grpc.aio.AioRpcError as e:
            tally.note("Acquire", e.code(), time.monotonic() - started)
            # Refusals come back at once; pace the retries as a client would.
            await asyncio.sleep(0.05)
            continue
        tally.note("Acquire", grpc.StatusCode.OK, time.monotonic() - started)
        tally.granted += 1
        tally.leases.add(lease.lease_id)
        await asyncio.sleep(0.02)
        while True:
            started = time.monotonic()
            try:
                await h.release(port, lease.lease_id, actual=SMALL_USE)
            except grpc.aio.AioRpcError as e:
                tally.note("Release", e.code(), time.monotonic() - started)
                if e.code() == grpc.StatusCode.UNAVAILABLE:
                    await asyncio.sleep(0.05)
                    continue
                break
            tally.note("Release", grpc.StatusCode.OK, time.monotonic() - started)
            break


@pytest.mark.ledgers
async def test_redis_killed_under_load_fails_closed_and_comes_back_with_its_data(
    fault_harness: Harness, model_redis: ModelRedis
) -> None:
    h = fault_harness
    instances = boot(h, 2)
    proxy = h.boot_proxy([p.port for p in instances])
    ports = [p.port for p in instances]
    ids = sorted(p.instance_id for p in instances)
    stop, tally = asyncio.Event(), Tally()
    workers = [asyncio.create_task(load(h, port, stop, tally)) for port in [proxy.port, proxy.port, *ports]]
    try:
        await eventually(lambda: _at_least(tally.granted, 10), timeout=30, what="the load to get grants")

        model_redis.stop()
        for port in ports:
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await h.acquire(port, JOB, timeout=CALL_DEADLINE_S)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
            assert "Redis" in (err.value.details() or "")
            assert time.monotonic() - started < CALL_DEADLINE_S
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        await eventually(lambda: all_health(ports, not_serving), timeout=10, what="NOT_SERVING while Redis is down")
        down = sum(tally.codes.values())
        await eventually(
            lambda: _at_least(sum(tally.codes.values()), down + 20), timeout=30, what="the load to go on meanwhile"
        )

        model_redis.restart()
        back = time.monotonic()
        serving = health_pb2.HealthCheckResponse.SERVING

        async def full_service() -> bool:
            return await all_health(ports, serving) and all([await serves_a_job(h, p) for p in [*ports, proxy.port]])

        await eventually(full_service, timeout=RECOVERY_S, what="full service after Redis came back")
        recovered_s = time.monotonic() - back
        assert sorted(h.ledger().instances()) == ids, "the instances were not registered after the restart"
        assert [(await h.allocation(p)).allocation.instance_count for p in ports] == [2, 2]
    finally:
        stop.set()
        await asyncio.gather(*workers)

    # Whatever each worker was doing when Redis went, its calls then were answered UNAVAILABLE.
    assert tally.codes["Acquire UNAVAILABLE"] + tally.codes["Release UNAVAILABLE"] > 0, tally.codes
    unexpected = {c for c in tally.codes if c.split()[1] not in ("OK", "UNAVAILABLE", "RESOURCE_EXHAUSTED")}
    assert not unexpected, f"unexpected answers {unexpected} in {tally.codes}"
    assert not tally.late, f"calls answered after their deadline: {tally.late}"
    assert tally.codes["Release OK"] == tally.granted, tally.codes
    view = h.ledger().view()
    # An Acquire whose script ran just before Redis died was granted, but its answer was lost: the
    # client saw UNAVAILABLE, and that lease stays open until its TTL. No lease a client got is open.
    orphans = len(view.open_leases)
    assert not tally.leases & set(view.open_leases), view
    assert view.in_flight == {MODEL: orphans} and view.in_flight_by_instance == {MODEL: orphans}, view
    print(f"recovered in {recovered_s:.2f} s; calls: {dict(tally.codes)}")


async def _at_least(value: int, floor: int) -> bool:
    return value >= floor


@pytest.mark.ledgers
async def test_no_grant_above_the_limit_across_a_restart_with_the_data(
    fault_harness: Harness, model_redis: ModelRedis
) -> None:
    h = fault_harness
    ports = [p.port for p in boot(h, 2)]
    # The whole test must fit in one minute window, or the next window's capacity would blur it.
    await h.within_one_window(40)
    grants: list[tuple[int, pb.AcquireResponse]] = []

    async def take(port: int) -> bool:
        try:
            grants.append((port, await h.acquire(port, JOB, timeout=CALL_DEADLINE_S, lease_ttl_ms=TTL_MS)))
        except grpc.aio.AioRpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.details()
            return False
        return True

    # Part of the window: three jobs on each instance, two of each released at their estimate.
    for port in ports:
        for _ in range(3):
            assert await take(port)
    for port, grant in grants[:2] + grants[3:5]:
        await h.release(port, grant.lease_id, actual=pb.Usage(request_count=1, input_tokens=JOB_TOKENS))

    model_redis.restart()
    serving = health_pb2.HealthCheckResponse.SERVING
    await eventually(lambda: all_health(ports, serving), timeout=RECOVERY_S, what="SERVING after the restart")

    # Ask each instance in turn until both have refused twice in a row (or far too much was granted).
    refusals, turn = 0, 0
    while refusals < 4 and len(grants) <= 2 * LIMIT_TOKENS // JOB_TOKENS:
        refusals = 0 if await take(ports[turn % 2]) else refusals + 1
        turn += 1

    windows = {(g.lease_expires_at_ms - TTL_MS) // MINUTE_MS for _, g in grants}
    assert len(windows) == 1, f"the grants span windows {windows}"
    granted = sum(g.reserved.tokens for _, g in grants)
    assert granted <= LIMIT_TOKENS, f"{granted} tokens granted in one window, limit {LIMIT_TOKENS}"
    # All of it was granted: the restart neither lost the first six nor capacity.
    assert granted == LIMIT_TOKENS, f"only {granted} of {LIMIT_TOKENS} tokens granted"
    tokens, _ = h.ledger().committed(MODEL, windows.pop())
    assert tokens == LIMIT_TOKENS, f"the ledger holds {tokens} tokens committed"


@pytest.mark.ledgers
async def test_redis_back_empty_the_instances_register_again_by_themselves(
    fault_harness: Harness, model_redis: ModelRedis
) -> None:
    h = fault_harness
    instances = boot(h, 2)
    ports = [p.port for p in instances]
    lease = await h.acquire(ports[0], JOB, timeout=CALL_DEADLINE_S, lease_ttl_ms=TTL_MS)
    assert lease.lease_id in h.ledger().open_leases()
    model_redis.restart(empty=True)
    # The instances may register again at once; the lease they held is gone for good.
    assert lease.lease_id not in h.ledger().open_leases(), "the restarted Redis still has the data"

    async def back() -> bool:
        view = h.ledger().view()
        return view.models == [MODEL] and len(view.instances) == 2 and all([await serves_a_job(h, p) for p in ports])

    await eventually(back, timeout=RECOVERY_S, what="re-registration and the models published again")
    assert sorted(h.ledger().instances()) == sorted(p.instance_id for p in instances)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.release(instances[0].port, lease.lease_id, actual=SMALL_USE)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value.details()
    assert "ledger lost" in (err.value.details() or ""), err.value.details()
    # The instance dropped what the ledger forgot: nothing stays in flight or counted as a lease.
    report = await h.allocation(instances[0].port)
    assert report.active_leases == 0
    assert report.job_types[JOB].in_flight == 0
    assert h.ledger().view().in_flight == {MODEL: 0}


@pytest.mark.ledgers
async def test_a_lease_the_ledger_lost_answers_so_on_every_release(fault_harness: Harness) -> None:
    """The ledger forgets one open lease (as an evicting Redis would) while the instance stays
    registered: its Release, and every retry of it, says the ledger lost it."""
    h = fault_harness
    (p,) = boot(h, 1)
    lease = await h.acquire(p.port, JOB, timeout=CALL_DEADLINE_S, lease_ttl_ms=TTL_MS)
    assert h.redis().delete(h.key(MODEL, "lease", lease.lease_id)) == 1
    for attempt in range(3):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.release(p.port, lease.lease_id, actual=SMALL_USE)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND, (attempt, err.value.details())
        assert "ledger lost" in (err.value.details() or ""), (attempt, err.value.details())
    report = await h.allocation(p.port)
    assert report.active_leases == 0
    assert report.job_types[JOB].in_flight == 0


@pytest.mark.ledgers
async def test_an_instance_started_while_redis_is_down_serves_once_it_is_up(
    fault_harness: Harness, model_redis: ModelRedis
) -> None:
    h = fault_harness
    model_redis.stop()
    p = h.boot_instance(0, PRESET, NO_WAIT, wait_serving=False)
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    await eventually(lambda: all_health([p.port], not_serving), timeout=10, what="NOT_SERVING without Redis")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.acquire(p.port, JOB, timeout=CALL_DEADLINE_S)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
    model_redis.restart()
    await eventually(lambda: serves_a_job(h, p.port), timeout=RECOVERY_S, what="service once Redis is up")
    assert len(h.ledger().instances()) == 1


# One redis-server only: a cluster's nodes name their own addresses to the client (CLUSTER SLOTS), so a
# relay in front of one node cannot carry a cluster's traffic.
async def test_rediss_url_reaches_redis_over_tls(fault_harness: Harness, tmp_path: Path) -> None:
    h = fault_harness
    ca, cert, key = redis_certificate(tmp_path)
    relay = TlsRelay(cert, key, h.redis_server.port)
    relay.start()
    try:
        url = f"rediss://127.0.0.1:{relay.port}/0?ssl_ca_certs={ca}"
        p = h.boot_instance(0, PRESET, NO_WAIT, redis_url=url)
        assert await serves_a_job(h, p.port)
        assert h.ledger().instances() == [p.instance_id]
        # The ledger's connection and the event channel's, both through the TLS relay.
        assert relay.handshakes >= 2
    finally:
        relay.stop()
