"""The Python client, blocking and asyncio, with TLS (client certificate too) and a token, end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
from rlclient import AsyncRateLimitClient, RateLimitClient, Unauthenticated, tls_credentials

from .harness import ROOMY, ROOMY_JOB, Harness
from .pki import make_pki, with_token


async def test_the_client_over_mutual_tls_with_a_token_direct_and_through_the_proxy(
    harness: Harness, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    tokens = tmp_path / "tokens"
    tokens.write_text("tok-client\n")
    secure = [*pki.server_args(mutual=True), "--auth-token-file", str(tokens)]
    harness.credentials = with_token("tok-client", pki.credentials(client_cert=True))
    instance = harness.boot_instance(0, ROOMY, extra_args=secure)
    proxy = harness.boot_proxy([instance.port], extra_args=[*secure, *pki.target_args(client_cert=True)])
    credentials = tls_credentials(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)

    for target in (instance.address, proxy.address):
        with RateLimitClient(target, credentials=credentials, token="tok-client") as client:
            with client.acquire(ROOMY_JOB, timeout=10) as lease:
                lease.usage(input_tokens=10)
            assert lease.result is not None and lease.result.same_window
        async with AsyncRateLimitClient(target, credentials=credentials, token="tok-client") as aclient:
            async with aclient.acquire(ROOMY_JOB, timeout=10) as alease:
                alease.usage(input_tokens=10)
            assert alease.result is not None

        with (
            RateLimitClient(target, credentials=credentials) as anonymous,
            pytest.raises(Unauthenticated, match="requires a token"),
        ):
            anonymous.acquire(ROOMY_JOB, timeout=10)
