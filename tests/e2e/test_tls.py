"""TLS and mutual TLS on instances and the proxy, with certificates made at test time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .harness import ROOMY, ROOMY_JOB, Harness
from .pki import Pki, make_pki


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def health_error(port: int, credentials: grpc.ChannelCredentials | None) -> grpc.RpcError | None:
    """The error a health check with these credentials (None: plaintext) meets, or None when it is answered."""
    address = f"127.0.0.1:{port}"
    channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    with channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as e:
            return e
    return None


async def test_acquire_and_release_over_tls_direct_and_through_the_proxy(harness: Harness, pki: Pki) -> None:
    harness.credentials = pki.credentials()
    instances = [harness.boot_instance(0, ROOMY, extra_args=pki.server_args()) for _ in range(2)]
    for instance in instances:
        direct = await harness.run_job(instance.port, ROOMY_JOB)
        assert direct.granted and direct.release is not None, direct.details
        assert direct.acquire is not None and direct.acquire.instance_id == instance.instance_id

    proxy = harness.boot_proxy([i.port for i in instances], extra_args=pki.server_args() + pki.target_args())
    harness.wait_routes(proxy.port, [i.port for i in instances])
    # Release finds the issuing instance through the proxy's own probes, so this also proves those
    # travel over TLS.
    seen = set()
    for _ in range(4):
        job = await harness.run_job(proxy.port, ROOMY_JOB)
        assert job.granted and job.release is not None, job.details
        assert job.acquire is not None
        seen.add(job.acquire.instance_id)
    assert seen == {i.instance_id for i in instances}


async def test_plaintext_and_untrusted_clients_are_refused(harness: Harness, pki: Pki) -> None:
    harness.credentials = pki.credentials()
    instance = harness.boot_instance(0, ROOMY, extra_args=pki.server_args())

    plaintext = health_error(instance.port, None)
    assert plaintext is not None and plaintext.code() == grpc.StatusCode.UNAVAILABLE
    untrusted = health_error(instance.port, pki.credentials(ca=pki.other_ca))
    assert untrusted is not None and untrusted.code() == grpc.StatusCode.UNAVAILABLE
    assert health_error(instance.port, pki.credentials()) is None


async def test_mutual_tls_wants_a_client_certificate_at_the_instance_and_the_proxy(harness: Harness, pki: Pki) -> None:
    harness.credentials = pki.credentials(client_cert=True)
    instance = harness.boot_instance(0, ROOMY, extra_args=pki.server_args(mutual=True))

    anonymous = health_error(instance.port, pki.credentials())
    assert anonymous is not None and anonymous.code() == grpc.StatusCode.UNAVAILABLE
    assert (await harness.run_job(instance.port, ROOMY_JOB)).release is not None

    proxy = harness.boot_proxy(
        [instance.port], extra_args=pki.server_args(mutual=True) + pki.target_args(client_cert=True)
    )
    anonymous = health_error(proxy.port, pki.credentials())
    assert anonymous is not None and anonymous.code() == grpc.StatusCode.UNAVAILABLE
    job = await harness.run_job(proxy.port, ROOMY_JOB)
    assert job.release is not None, job.details


def start_error(module: str, args: list[str]) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("module", ["rlservice", "rlproxy"])
def test_unusable_tls_flags_stop_the_start_with_a_message(module: str, pki: Pki, tmp_path: Path) -> None:
    base = ["--port", "0"] + (["--preset", "default"] if module == "rlservice" else ["--targets", "127.0.0.1:1"])

    code, err = start_error(module, [*base, "--tls-cert", str(pki.cert)])
    assert code == 2 and "--tls-cert and --tls-key go together" in err, err

    missing = tmp_path / "nowhere.pem"
    code, err = start_error(module, [*base, "--tls-cert", str(missing), "--tls-key", str(pki.key)])
    assert code == 2 and f"TLS certificate {missing}: cannot read it" in err, err

    code, err = start_error(module, [*base, "--tls-cert", str(pki.key), "--tls-key", str(pki.key)])
    assert code == 2 and f"TLS certificate {pki.key}: no PEM block" in err, err

    code, err = start_error(module, [*base, "--tls-cert", str(pki.cert), "--tls-key", str(pki.client_key)])
    assert code == 2 and f"TLS key {pki.client_key} does not go with the certificate {pki.cert}" in err, err


def test_the_proxy_wants_a_target_ca_for_a_target_certificate(pki: Pki) -> None:
    args = ["--port", "0", "--targets", "127.0.0.1:1", "--target-cert", str(pki.client_cert)]
    code, err = start_error("rlproxy", [*args, "--target-key", str(pki.client_key)])
    assert code == 2 and "--target-cert and --target-key need --target-ca" in err, err
    code, err = start_error("rlproxy", [*args, "--target-ca", str(pki.ca)])
    assert code == 2 and "a client certificate and its key go together" in err, err
