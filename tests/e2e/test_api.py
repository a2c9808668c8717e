"""The API contract: status codes and messages, idempotency, health, reflection, deadlines, start-up."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rllocal.processes import RedisServer, free_port
from rlproto import ratelimit_pb2 as pb

from .harness import ROOT, Harness, eventually

Call = tuple[str, object]


@pytest.fixture
async def port(harness: Harness) -> int:
    return harness.boot_instance(0, "slotCalculation").port


async def expect(code: grpc.StatusCode, call: object, *fragments: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    assert err.value.code() == code, err.value.details()
    details = err.value.details() or ""
    for fragment in fragments:
        assert fragment in details
    return details


async def test_acquire_rejects_bad_requests(harness: Harness, port: int) -> None:
    stub = harness.stub(port)
    bad = grpc.StatusCode.INVALID_ARGUMENT
    await expect(bad, stub.Acquire(pb.AcquireRequest(job_type="jobTypeA")), "job_id is required")
    await expect(bad, stub.Acquire(pb.AcquireRequest(job_id="j")), "job_type is required")
    await expect(
        bad, stub.Acquire(pb.AcquireRequest(job_id="j", job_type="nope")), "unknown job_type 'nope'", "jobTypeA"
    )
    await expect(
        bad, stub.Acquire(pb.AcquireRequest(job_id="j", job_type="jobTypeA", models=["gpt-0"])), "unknown model 'gpt-0'"
    )
    await expect(
        bad,
        stub.Acquire(pb.AcquireRequest(job_id="j", job_type="jobTypeA", models=["model-beta", "model-beta"])),
        "twice",
    )
    await expect(bad, stub.Acquire(pb.AcquireRequest(job_id="j", job_type="jobTypeA", lease_ttl_ms=-1)), "lease_ttl_ms")
    await expect(bad, stub.Acquire(pb.AcquireRequest(job_id="j" * 300, job_type="jobTypeA")), "job_id is longer")
    alloc = await harness.allocation(port)
    assert alloc.active_leases == 0
    assert alloc.allocation.pools["model-alpha"].tokens_per_minute == 100_000


async def test_release_rejects_bad_requests_without_closing_the_lease(harness: Harness, port: int) -> None:
    stub = harness.stub(port)
    lease = await harness.acquire(port, "jobTypeA")
    bad = grpc.StatusCode.INVALID_ARGUMENT
    await expect(bad, stub.Release(pb.ReleaseRequest(lease_id=lease.lease_id)), "outcome is required")
    await expect(bad, stub.Release(pb.ReleaseRequest(outcome=pb.SUCCESS)), "lease_id is required")
    negative = pb.Usage(input_tokens=-5)
    await expect(
        bad, stub.Release(pb.ReleaseRequest(lease_id=lease.lease_id, outcome=pb.SUCCESS, actual=negative)), "negative"
    )
    absurd = pb.Usage(output_tokens=10**15)
    await expect(
        bad, stub.Release(pb.ReleaseRequest(lease_id=lease.lease_id, outcome=pb.SUCCESS, actual=absurd)), "absurd"
    )
    await expect(bad, stub.ExtendLease(pb.ExtendLeaseRequest(lease_id=lease.lease_id, ttl_ms=0)), "ttl_ms")
    assert (await harness.allocation(port)).active_leases == 1
    done = await harness.release(port, lease.lease_id, actual=pb.Usage(request_count=1, input_tokens=10_000))
    assert done.same_window


async def test_unknown_leases_are_not_found(harness: Harness, port: int) -> None:
    stub = harness.stub(port)
    missing = grpc.StatusCode.NOT_FOUND
    await expect(missing, stub.Release(pb.ReleaseRequest(lease_id="x/y", outcome=pb.SUCCESS)), "x/y", "unknown")
    await expect(missing, stub.ExtendLease(pb.ExtendLeaseRequest(lease_id="x/y", ttl_ms=1000)), "not open")
    await expect(missing, stub.GetAllocation(pb.GetAllocationRequest(instance_id="someone-else")), "someone-else")


async def test_acquire_is_idempotent_by_job_id_on_any_instance(harness: Harness) -> None:
    a = harness.boot_instance(0, "slotCalculation").port
    b = harness.boot_instance(0, "slotCalculation").port
    first = await harness.acquire(a, "jobTypeA", job_id="same-job")
    again = await harness.acquire(a, "jobTypeA", job_id="same-job")
    elsewhere = await harness.acquire(b, "jobTypeA", job_id="same-job")
    assert first.lease_id == again.lease_id == elsewhere.lease_id
    assert elsewhere.instance_id == first.instance_id
    # One lease, held by A: an open lease moves no pool.
    assert [(await harness.allocation(p)).active_leases for p in (a, b)] == [1, 0]
    assert (await harness.allocation(a)).allocation.pools["model-alpha"].tokens_per_minute == 50_000
    await harness.release(a, first.lease_id)
    fresh = await harness.acquire(b, "jobTypeA", job_id="same-job")
    assert fresh.lease_id != first.lease_id


async def test_releasing_twice_returns_the_first_answer(harness: Harness, port: int) -> None:
    lease = await harness.acquire(port, "jobTypeB")
    used = pb.Usage(request_count=1, input_tokens=1000, output_tokens=500)
    first = await harness.release(port, lease.lease_id, actual=used)
    second = await harness.release(port, lease.lease_id, pb.FAILED_UNKNOWN_USAGE)
    assert first == second
    assert first.refunded_tokens == 3500


async def test_the_client_deadline_ends_the_wait(harness: Harness) -> None:
    port = harness.boot_instance(0, "instanceScaling").port
    await harness.within_one_window()
    for _ in range(10):
        await harness.acquire(port, "scaleJob")
    await expect(grpc.StatusCode.DEADLINE_EXCEEDED, harness.acquire(port, "scaleJob", timeout=0.5))

    async def queue_empty() -> bool:
        alloc = await harness.allocation(port)
        return alloc.model_job_types["scale-model"].job_types["scaleJob"].waiting == 0

    await eventually(queue_empty, what="the timed-out waiter to leave the queue")


async def test_a_cancelled_acquire_leaves_the_queue_and_holds_nothing(harness: Harness) -> None:
    port = harness.boot_instance(0, "instanceScaling").port
    await harness.within_one_window()
    leases = [await harness.acquire(port, "scaleJob") for _ in range(10)]
    call = harness.stub(port).Acquire(pb.AcquireRequest(job_id="cancel-me", job_type="scaleJob"))

    async def waiting(n: int) -> bool:
        alloc = await harness.allocation(port)
        return alloc.model_job_types["scale-model"].job_types["scaleJob"].waiting == n

    await eventually(lambda: waiting(1), what="a waiter")
    call.cancel()
    await eventually(lambda: waiting(0), what="the cancelled waiter to leave")
    # Refunded in full: exactly one job's room comes back, and the cancelled call must not have taken it.
    await harness.release(port, leases[0].lease_id, actual=pb.Usage())
    nxt = await harness.acquire(port, "scaleJob", job_id="after-cancel", timeout=10)
    assert nxt.model_id == "scale-model"
    assert (await harness.allocation(port)).active_leases == 10


async def test_health_and_reflection(harness: Harness, port: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "ratelimit.v1.RateLimiter"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    names = await reflected_services(f"127.0.0.1:{port}")
    assert {"ratelimit.v1.RateLimiter", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= set(
        names
    )
    assert names["ratelimit.v1.RateLimiter"] >= {"Acquire", "Release", "ExtendLease", "GetAllocation"}
    assert names["grpc.health.v1.Health"] >= {"Check", "Watch"}


async def test_the_proxy_answers_reflection_for_every_service(harness: Harness) -> None:
    infra = harness.boot_infrastructure("slotCalculation")
    names = await reflected_services(infra.proxy.address)
    assert names["ratelimit.v1.RateLimiter"] >= {"Acquire", "Release", "ExtendLease", "GetAllocation"}
    assert "grpc.health.v1.Health" in names


async def reflected_services(address: str) -> dict[str, set[str]]:
    """What `grpcurl list` and `describe` see: every service and, from its descriptor, its methods."""
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        listing = [
            r async for r in stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        ]
        out: dict[str, set[str]] = {}
        for service in listing[0].list_services_response.service:
            request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=service.name)
            replies = [r async for r in stub.ServerReflectionInfo(iter([request]))]
            files = replies[0].file_descriptor_response.file_descriptor_proto
            assert files, f"no descriptor for {service.name}"
            methods: set[str] = set()
            for raw in files:
                proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
                for svc in proto.service:
                    if f"{proto.package}.{svc.name}" == service.name:
                        methods |= {m.name for m in svc.method}
            assert methods, f"{service.name} is not described"
            out[service.name] = methods
        return out


async def test_redis_down_means_unavailable_and_not_serving(harness: Harness, tmp_path: Path) -> None:
    own = RedisServer(tmp_path)
    own.start()
    try:
        args = ["--port", "0", "--preset", "instanceScaling", "--redis-url", own.url]
        proc = harness._spawn("rlservice", args)
        harness.processes[proc.port] = proc
        harness.wait_serving(proc.port)
        own.stop()
        await expect(grpc.StatusCode.UNAVAILABLE, harness.acquire(proc.port, "scaleJob", timeout=10), "Redis")

        async def not_serving() -> bool:
            async with grpc.aio.insecure_channel(proc.address) as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                return bool(reply.status == health_pb2.HealthCheckResponse.NOT_SERVING)

        await eventually(not_serving, timeout=20, what="NOT_SERVING while Redis is down")
    finally:
        own.stop()


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("models: {m: {tokens_per_minute: 0}}\njob_types: {a: {estimated_tokens: 1}}", "models.m.tokens_per_minute"),
        (
            "models: {m: {tokens_per_minute: 10}}\njob_types: {a: {estimated_tokens: -1}}",
            "job_types.a.estimated_tokens",
        ),
        ("models: {m: {}}\njob_types: {a: {estimated_tokens: 1}}", "at least one limit"),
        ("models: {m: {tokens_per_minute: 10}}\nescalation_order: [x]\njob_types: {a: {estimated_tokens: 1}}", "x"),
        (
            "models: {m: {tokens_per_minute: 10}}\njob_types: {a: {estimated_tokens: 1, ratio: {initial: 0.7}},"
            " b: {estimated_tokens: 1, ratio: {initial: 0.7}}}",
            "above 1",
        ),
    ],
)
def test_a_bad_configuration_fails_at_start_naming_the_field(tmp_path: Path, yaml_text: str, field: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlservice",
            "--port",
            "0",
            "--config",
            str(config),
            "--redis-url",
            f"redis://127.0.0.1:{free_port()}/0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert field in done.stderr
    assert "listening" not in done.stdout


def test_an_unknown_preset_names_the_known_ones() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rlservice", "--port", "0", "--preset", "nope"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert "unknown preset 'nope'" in done.stderr and "slotCalc-tpm" in done.stderr


async def test_concurrent_retries_of_one_job_share_one_lease(harness: Harness, port: int) -> None:
    grants = await asyncio.gather(*(harness.acquire(port, "jobTypeB", job_id="burst") for _ in range(5)))
    assert len({g.lease_id for g in grants}) == 1
    assert (await harness.allocation(port)).active_leases == 1


async def test_a_retry_joined_to_a_cancelled_acquire_carries_on_alone(harness: Harness) -> None:
    port = harness.boot_instance(0, "instanceScaling").port
    await harness.within_one_window()
    leases = [await harness.acquire(port, "scaleJob") for _ in range(10)]
    stub = harness.stub(port)
    first = stub.Acquire(pb.AcquireRequest(job_id="dup", job_type="scaleJob"), timeout=30)

    async def one_waiter() -> bool:
        alloc = await harness.allocation(port)
        return alloc.model_job_types["scale-model"].job_types["scaleJob"].waiting == 1

    await eventually(one_waiter, what="the first Acquire to wait")
    retry = asyncio.ensure_future(harness.acquire(port, "scaleJob", job_id="dup"))
    log = harness.processes[port].log
    await eventually(lambda: _true("job dup joins" in log.read_text()), what="the retry to join the first attempt")
    first.cancel()
    await eventually(lambda: _no_waiter_or_retry_waiting(harness, port, retry), what="the retry to wait alone")
    await harness.release(port, leases[0].lease_id, actual=pb.Usage())
    granted = await asyncio.wait_for(retry, 10)
    assert granted.model_id == "scale-model"


async def _true(value: bool) -> bool:
    return value


async def _no_waiter_or_retry_waiting(harness: Harness, port: int, retry: asyncio.Future[pb.AcquireResponse]) -> bool:
    assert not retry.done() or retry.exception() is None, retry.exception()
    alloc = await harness.allocation(port)
    return alloc.model_job_types["scale-model"].job_types["scaleJob"].waiting == 1
