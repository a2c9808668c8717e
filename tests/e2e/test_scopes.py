"""Tokens scoped to job types and models, on an instance and through the proxy: two teams that cannot
take or end each other's capacity, an unrestricted token, SIGHUP changing a scope."""

from __future__ import annotations

import functools
import signal
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from rlproto import ratelimit_pb2 as pb
from rlproto import ratelimit_pb2_grpc as pb_grpc

from .harness import Harness, Process, eventually
from .pki import with_token
from .test_auth import assert_not_logged, auth_args

PRESET = "slotCalc-multi-model"  # models model-tpm, model-concurrent; job types jobTypeA, jobTypeB
TEAM_A = "tok-team-a-71"
TEAM_B = "tok-team-b-82"
OPS = "tok-ops-93"
LINES = (
    "# team A runs jobTypeA on any model; team B jobTypeB on model-concurrent only",
    f"{TEAM_A} job_types=jobTypeA",
    f"{TEAM_B} job_types=jobTypeB models=model-concurrent",
    OPS,
)
DENIED = grpc.StatusCode.PERMISSION_DENIED
MAY_A = "this token may use job types jobTypeA and models any"
MAY_B = "this token may use job types jobTypeB and models model-concurrent"


def write_tokens(path: Path, *lines: str) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


async def call(port: int, token: str, method: str, request: Any) -> tuple[grpc.StatusCode, str, Any]:
    """`method` with `token`; (code, details, reply or None)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.RateLimiterStub(channel)
        try:
            reply = await getattr(stub, method)(request, timeout=20, metadata=(("authorization", f"Bearer {token}"),))
        except grpc.aio.AioRpcError as e:
            return e.code(), e.details() or "", None
    return grpc.StatusCode.OK, "", reply


async def acquire(port: int, token: str, job_type: str, *models: str) -> tuple[grpc.StatusCode, str, Any]:
    request = pb.AcquireRequest(job_id=f"job-{job_type}-{len(models)}-{token[-2:]}", job_type=job_type, models=models)
    return await call(port, token, "Acquire", request)


def release(lease_id: str) -> pb.ReleaseRequest:
    return pb.ReleaseRequest(lease_id=lease_id, outcome=pb.SUCCESS, actual=pb.Usage(request_count=1, input_tokens=5))


async def nothing_open(harness: Harness, instances: list[Process]) -> None:
    async def clear() -> bool:
        counts = [harness.fetch_allocation(i.port).active_leases for i in instances]
        flights = [harness.in_flight(m).get("_", 0) for m in ("model-tpm", "model-concurrent")]
        return counts == [0] * len(instances) and flights == [0, 0]

    await eventually(clear, timeout=30, what="no lease open and nothing in flight")


def boot(harness: Harness, tokens: Path, via: str) -> tuple[list[Process], int]:
    harness.credentials = with_token(OPS)
    instances = [harness.boot_instance(0, PRESET, extra_args=auth_args(tokens))]
    if via == "instance":
        return instances, instances[0].port
    proxy = harness.boot_proxy([i.port for i in instances], extra_args=auth_args(tokens))
    harness.wait_routes(proxy.port, [i.port for i in instances])
    return [*instances, proxy], proxy.port


@pytest.mark.parametrize("via", ["instance", "proxy"])
async def test_two_teams_keep_to_their_job_types_and_models(harness: Harness, tmp_path: Path, via: str) -> None:
    processes, port = boot(harness, write_tokens(tmp_path / "tokens", *LINES), via)
    instances = processes[:1]

    code, details, grant_a = await acquire(port, TEAM_A, "jobTypeA")
    assert code == grpc.StatusCode.OK, details
    code, details, _ = await acquire(port, TEAM_A, "jobTypeB")
    assert code == DENIED and details.startswith(MAY_A) and "asks for job type 'jobTypeB'" in details, details
    code, details, _ = await acquire(port, TEAM_B, "jobTypeB", "model-tpm")
    assert code == DENIED and details.startswith(MAY_B) and details.endswith("and models model-tpm"), details
    # Escalation that names a model out of scope is refused whole, not narrowed to the allowed one.
    code, details, _ = await acquire(port, TEAM_B, "jobTypeB", "model-concurrent", "model-tpm")
    assert code == DENIED and details.endswith("models model-concurrent, model-tpm"), details
    code, details, _ = await acquire(port, TEAM_B, "jobTypeB")
    assert code == DENIED and "models none (a token restricted to models must name them)" in details, details
    code, details, grant_b = await acquire(port, TEAM_B, "jobTypeB", "model-concurrent")
    assert code == grpc.StatusCode.OK and grant_b.model_id == "model-concurrent", details

    # Team B can neither end nor extend team A's lease; it stays open and team A still holds it.
    code, details, _ = await call(port, TEAM_B, "Release", release(grant_a.lease_id))
    assert code == DENIED and details.startswith(MAY_B), details
    assert f"job type 'jobTypeA' and models {grant_a.model_id}" in details, details
    code, details, _ = await call(
        port, TEAM_B, "ExtendLease", pb.ExtendLeaseRequest(lease_id=grant_a.lease_id, ttl_ms=60_000)
    )
    assert code == DENIED and details.startswith(MAY_B), details
    assert harness.fetch_allocation(instances[0].port).active_leases == 2
    code, details, extended = await call(
        port, TEAM_A, "ExtendLease", pb.ExtendLeaseRequest(lease_id=grant_a.lease_id, ttl_ms=60_000)
    )
    assert code == grpc.StatusCode.OK and extended.lease_expires_at_ms > 0, details
    code, details, _ = await call(port, TEAM_A, "Release", release(grant_b.lease_id))
    assert code == DENIED and details.startswith(MAY_A), details

    for token, grant in ((TEAM_A, grant_a), (TEAM_B, grant_b)):
        code, details, _ = await call(port, token, "Release", release(grant.lease_id))
        assert code == grpc.StatusCode.OK, details

    # The unrestricted token: any job type, any model, the configured order; allocation open to all.
    code, details, grant = await acquire(port, OPS, "jobTypeB")
    assert code == grpc.StatusCode.OK and grant.model_id == "model-tpm", details
    code, details, _ = await call(port, OPS, "Release", release(grant.lease_id))
    assert code == grpc.StatusCode.OK, details
    code, details, _ = await call(port, TEAM_B, "GetAllocation", pb.GetAllocationRequest())
    assert code == grpc.StatusCode.OK, details

    await nothing_open(harness, instances)
    for process in processes:
        assert_not_logged(process, TEAM_A, TEAM_B, OPS)


async def test_the_proxy_refuses_out_of_scope_acquires_before_open_instances(harness: Harness, tmp_path: Path) -> None:
    instances = [harness.boot_instance(0, PRESET) for _ in range(2)]
    proxy = harness.boot_proxy([i.port for i in instances], extra_args=auth_args(write_tokens(tmp_path / "t", *LINES)))
    harness.wait_routes(proxy.port, [i.port for i in instances])
    code, details, _ = await acquire(proxy.port, TEAM_B, "jobTypeA", "model-concurrent")
    assert code == DENIED and details.startswith(MAY_B), details
    code, details, grant = await acquire(proxy.port, TEAM_A, "jobTypeA", "model-tpm")
    assert code == grpc.StatusCode.OK, details
    code, details, _ = await call(proxy.port, TEAM_A, "Release", release(grant.lease_id))
    assert code == grpc.StatusCode.OK, details
    await nothing_open(harness, instances)


async def test_sighup_changes_a_scope_and_a_bad_file_keeps_it(harness: Harness, tmp_path: Path) -> None:
    tokens = write_tokens(tmp_path / "tokens", *LINES)
    processes, proxy_port = boot(harness, tokens, "proxy")
    ports = [processes[0].port, proxy_port]

    write_tokens(tokens, f"{TEAM_A} job_types=jobTypeB", OPS)
    for process in processes:
        process.proc.send_signal(signal.SIGHUP)

    async def moved(port: int) -> bool:
        code, _, grant = await acquire(port, TEAM_A, "jobTypeB", "model-tpm")
        if code != grpc.StatusCode.OK:
            return False
        assert (await call(port, TEAM_A, "Release", release(grant.lease_id)))[0] == grpc.StatusCode.OK
        return True

    for port in ports:
        await eventually(functools.partial(moved, port), timeout=30, what="team A's new scope")
        code, details, _ = await acquire(port, TEAM_A, "jobTypeA")
        assert code == DENIED and details.startswith("this token may use job types jobTypeB and models any"), details
        code, details, _ = await acquire(port, TEAM_B, "jobTypeB", "model-concurrent")
        assert code == grpc.StatusCode.UNAUTHENTICATED, details

    write_tokens(tokens, f"{TEAM_A} job_types=jobTypeA models=", OPS)
    for process in processes:
        process.proc.send_signal(signal.SIGHUP)

    async def warned() -> bool:
        return all("line 1: models lists an empty name" in p.log.read_text() for p in processes)

    await eventually(warned, timeout=30, what="a warning about the bad line on both")
    for port in ports:
        assert await moved(port)
    await nothing_open(harness, processes[:1])
    for process in processes:
        assert process.alive()
        assert_not_logged(process, TEAM_A, TEAM_B, OPS)
