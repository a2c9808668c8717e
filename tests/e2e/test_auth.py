"""Bearer tokens on instances and the proxy: who gets in, what they are told, SIGHUP rotation, no leaks."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from rlproto import ratelimit_pb2 as pb
from rlproto import ratelimit_pb2_grpc as pb_grpc

from .harness import ROOMY, ROOMY_JOB, Harness, Process, eventually
from .pki import with_token

MISSING = "this server requires a token: send the metadata 'authorization: Bearer <token>'"
REJECTED = "the bearer token is not one this server accepts"


def token_file(folder: Path, *lines: str) -> Path:
    path = folder / "tokens"
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def auth_args(path: Path) -> list[str]:
    # DEBUG, so that a token logged at any level would show.
    return ["--auth-token-file", str(path), "--log-level", "DEBUG"]


async def refusal(port: int, authorization: str | None, method: str = "GetAllocation") -> tuple[grpc.StatusCode, str]:
    """Calls `method` with this authorization metadata (None: none) on a plaintext channel."""
    metadata = None if authorization is None else (("authorization", authorization),)
    requests = {
        "GetAllocation": pb.GetAllocationRequest(),
        "Acquire": pb.AcquireRequest(job_id="job-auth", job_type=ROOMY_JOB),
        "Release": pb.ReleaseRequest(lease_id="x/y"),
        "ExtendLease": pb.ExtendLeaseRequest(lease_id="x/y", ttl_ms=1000),
    }
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.RateLimiterStub(channel)
        try:
            await getattr(stub, method)(requests[method], timeout=10, metadata=metadata)
        except grpc.aio.AioRpcError as e:
            return e.code(), e.details() or ""
    return grpc.StatusCode.OK, ""


async def accepted(port: int, token: str) -> bool:
    return (await refusal(port, f"Bearer {token}"))[0] == grpc.StatusCode.OK


def assert_not_logged(process: Process, *secrets: str) -> None:
    text = process.log.read_text()
    assert text, f"{process.kind} wrote no log at all"
    for secret in secrets:
        assert secret not in text, f"{process.kind} logged a token"


async def test_ratelimiter_calls_need_an_accepted_token_health_and_reflection_do_not(
    harness: Harness, tmp_path: Path
) -> None:
    tokens = token_file(tmp_path, "# the billing team", "tok-alpha-1", "", "tok-bravo-2")
    harness.credentials = with_token("tok-bravo-2")
    instance = harness.boot_instance(0, ROOMY, extra_args=auth_args(tokens))

    job = await harness.run_job(instance.port, ROOMY_JOB)
    assert job.release is not None, job.details
    assert await accepted(instance.port, "tok-alpha-1")

    for method in ("GetAllocation", "Acquire", "Release", "ExtendLease"):
        code, details = await refusal(instance.port, None, method)
        assert code == grpc.StatusCode.UNAUTHENTICATED and details.startswith(MISSING), (method, details)
    code, details = await refusal(instance.port, "Bearer tok-charlie-3")
    assert code == grpc.StatusCode.UNAUTHENTICATED and details.startswith(REJECTED), details
    code, details = await refusal(instance.port, "Basic tok-alpha-1")
    assert code == grpc.StatusCode.UNAUTHENTICATED and "must be 'Bearer <token>'" in details, details

    async with grpc.aio.insecure_channel(instance.address) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = [reply async for reply in reflection.ServerReflectionInfo(iter([request]))]
        assert len(replies) == 1
        assert "ratelimit.v1.RateLimiter" in {s.name for s in replies[0].list_services_response.service}

    assert_not_logged(instance, "tok-alpha-1", "tok-bravo-2", "tok-charlie-3")


async def test_sighup_swaps_the_tokens_and_a_bad_file_keeps_them(harness: Harness, tmp_path: Path) -> None:
    tokens = token_file(tmp_path, "tok-old")
    harness.credentials = with_token("tok-old")
    instance = harness.boot_instance(0, ROOMY, extra_args=auth_args(tokens))
    assert await accepted(instance.port, "tok-old")

    token_file(tmp_path, "tok-new")
    instance.proc.send_signal(signal.SIGHUP)
    await eventually(lambda: accepted(instance.port, "tok-new"), what="the new token to be accepted")
    assert not await accepted(instance.port, "tok-old")

    token_file(tmp_path, "# nothing left")
    instance.proc.send_signal(signal.SIGHUP)

    async def warned() -> bool:
        return f"token file {tokens}: no token in it" in instance.log.read_text()

    await eventually(warned, what="a warning about the empty token file")
    assert instance.alive()
    assert await accepted(instance.port, "tok-new")
    assert_not_logged(instance, "tok-old", "tok-new")


async def test_the_proxy_checks_tokens_or_passes_them_through(harness: Harness, tmp_path: Path) -> None:
    tokens = token_file(tmp_path, "tok-proxy-1")
    harness.credentials = with_token("tok-proxy-1")
    instances = [harness.boot_instance(0, ROOMY, extra_args=auth_args(tokens)) for _ in range(2)]

    # Checking: refused at the proxy; accepted calls reach both instances, and Release finds the
    # issuer by the proxy's own probes, which carry the proxy's token.
    checking = harness.boot_proxy([i.port for i in instances], extra_args=auth_args(tokens))
    harness.wait_routes(checking.port, [i.port for i in instances])
    code, details = await refusal(checking.port, None, "Acquire")
    assert code == grpc.StatusCode.UNAUTHENTICATED and details.startswith(MISSING), details
    seen = set()
    for _ in range(4):
        job = await harness.run_job(checking.port, ROOMY_JOB)
        assert job.release is not None and job.acquire is not None, job.details
        seen.add(job.acquire.instance_id)
    assert seen == {i.instance_id for i in instances}

    # Passing through: the instances refuse, with their own message, what the proxy lets by.
    passing = harness.boot_proxy(
        [i.port for i in instances], extra_args=["--target-token-file", str(tokens), "--log-level", "DEBUG"]
    )
    code, details = await refusal(passing.port, "Bearer tok-wrong", "Acquire")
    assert code == grpc.StatusCode.UNAUTHENTICATED and details.startswith(REJECTED), details
    job = await harness.run_job(passing.port, ROOMY_JOB)
    assert job.release is not None, job.details

    for process in (*instances, checking, passing):
        assert_not_logged(process, "tok-proxy-1", "tok-wrong")


@pytest.mark.parametrize("module", ["rlservice", "rlproxy"])
def test_an_empty_or_unreadable_token_file_stops_the_start(module: str, tmp_path: Path) -> None:
    base = ["--port", "0"] + (["--preset", "default"] if module == "rlservice" else ["--targets", "127.0.0.1:1"])
    empty = token_file(tmp_path, "", "# no token yet")
    missing = tmp_path / "absent"
    spaced = tmp_path / "spaced"
    spaced.write_text("two words\n")
    scoped = tmp_path / "scoped"
    scoped.write_text("tok-fine\ntok-twice job_types=a job_types=b\n")
    for path, message in (
        (empty, f"token file {empty}: no token in it"),
        (missing, f"token file {missing}: cannot read it"),
        (spaced, f"token file {spaced}, line 1: field 2 is not key=value"),
        (scoped, f"token file {scoped}, line 2: job_types is given twice"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", module, *base, "--auth-token-file", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "two words" not in proc.stderr and "words" not in proc.stderr and "tok-" not in proc.stderr
