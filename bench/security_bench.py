"""What TLS, mutual TLS, bearer tokens and JSON logs cost: Acquire + Release pairs against instances
that differ only in those flags.

Starts a redis-server and one rlservice instance per set-up (each under its own key prefix, so they
share nothing), on loopback, then drives them with the same load in alternating rounds, as
bench/proxy_bench.py does for the proxy. Prints p50/p99 per call and per pair and pairs per second
for each set-up, and what each adds to plaintext per call.

    python bench/security_bench.py [--pairs 3000] [--concurrency 32] [--rounds 3] [--max-seconds 120]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

import grpc
import grpc.aio
import trustme
from pairs import SetUp, add_arguments, measure, report

from rllocal.processes import RedisServer, running

HOST = "127.0.0.1"
BOOT_TIMEOUT_S = 30.0
TOKEN = "bench-token"
SETUPS = ("plaintext", "token", "tls", "mtls+token", "json-logs")


class Pki:
    def __init__(self, folder: Path) -> None:
        ca = trustme.CA()
        server, client = ca.issue_cert(HOST), ca.issue_cert("bench-client")
        self.ca, self.cert, self.key = folder / "ca.pem", folder / "server.pem", folder / "server.key"
        self.client_cert, self.client_key = folder / "client.pem", folder / "client.key"
        self.tokens = folder / "tokens"
        ca.cert_pem.write_to_path(str(self.ca))
        for leaf, cert, key in ((server, self.cert, self.key), (client, self.client_cert, self.client_key)):
            cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
            leaf.private_key_pem.write_to_path(str(key))
        self.tokens.write_text(f"{TOKEN}\n")

    def flags(self, setup: str) -> list[str]:
        tls = ["--tls-cert", str(self.cert), "--tls-key", str(self.key)]
        token = ["--auth-token-file", str(self.tokens)]
        return {
            "plaintext": [],
            "token": token,
            "tls": tls,
            "mtls+token": [*tls, "--tls-client-ca", str(self.ca), *token],
            "json-logs": ["--log-format", "json"],
        }[setup]

    def credentials(self, setup: str) -> grpc.ChannelCredentials | None:
        if setup not in ("tls", "mtls+token"):
            return None
        mutual = setup == "mtls+token"
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.client_key.read_bytes() if mutual else None,
            certificate_chain=self.client_cert.read_bytes() if mutual else None,
        )


def metadata(setup: str) -> tuple[tuple[str, str], ...] | None:
    # Per-call metadata, as rlclient sends it: gRPC's call credentials run a Python plugin on another
    # thread for every call, which would be measured instead of the server's check.
    return (("authorization", f"Bearer {TOKEN}"),) if "token" in setup else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, "set-up")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="security-bench-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        pki = Pki(work)
        redis = RedisServer(work)
        redis.start()
        stack.callback(redis.stop)
        ports = {}
        for setup in SETUPS:
            flags = [
                "--port",
                "0",
                "--preset",
                "default",
                "--redis-url",
                redis.url,
                "--key-prefix",
                f"bench-{setup.replace('+', '-')}",
            ]
            log = work / f"{setup}.log"
            ports[setup] = stack.enter_context(
                running(
                    "rlservice",
                    [*flags, *pki.flags(setup)],
                    log,
                    BOOT_TIMEOUT_S,
                    pki.credentials(setup),
                    env={"RL_LOG_LEVEL": "WARNING"},
                )
            )

        results = measure([SetUp(s, f"{HOST}:{ports[s]}", pki.credentials(s), metadata(s)) for s in SETUPS], args)
    return report(
        results, "Acquire + Release pairs on loopback, one rlservice instance per set-up (preset default)", "set-up"
    )


if __name__ == "__main__":
    sys.exit(main())
