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
import time
from pathlib import Path

import grpc
import grpc.aio
import trustme
import uvloop
from proxy_bench import Samples, drive, percentile_ms

from rllocal.processes import RedisServer, running
from rlproto import ratelimit_pb2_grpc as pb_grpc

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


def channel(port: int, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    address = f"{HOST}:{port}"
    return grpc.aio.secure_channel(address, credentials) if credentials else grpc.aio.insecure_channel(address)


async def measure(ports: dict[str, int], pki: Pki, args: argparse.Namespace) -> dict[int, dict[str, Samples]]:
    until = time.perf_counter() + args.max_seconds
    channels = {setup: channel(port, pki.credentials(setup)) for setup, port in ports.items()}
    stubs = {setup: pb_grpc.RateLimiterStub(ch) for setup, ch in channels.items()}
    results: dict[int, dict[str, Samples]] = {}
    try:
        for setup, stub in stubs.items():
            await drive(stub, args.warmup, args.concurrency, until, f"warmup-{setup}", metadata(setup))
        for level in sorted({1, args.concurrency}):
            results[level] = {setup: Samples() for setup in SETUPS}
            pairs = (args.pairs if level == args.concurrency else args.sequential_pairs) // args.rounds
            for n in range(args.rounds):
                for setup in SETUPS if n % 2 == 0 else SETUPS[::-1]:
                    tag = f"c{level}-r{n}-{setup}"
                    samples = await drive(stubs[setup], pairs, level, until, tag, metadata(setup))
                    results[level][setup].add(samples)
    finally:
        for ch in channels.values():
            await ch.close(None)
    return results


def report(results: dict[int, dict[str, Samples]]) -> int:
    print("Acquire + Release pairs on loopback, one rlservice instance per set-up (preset default)")
    header = ("concurrency", "set-up", "pairs", "pairs/s", "call p50", "call p99", "pair p50", "pair p99", "errors")
    print("{:>11} {:>10} {:>6} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6}".format(*header))
    errors = 0
    for level, by_setup in results.items():
        for setup, s in by_setup.items():
            rate = len(s.pairs) / s.seconds if s.seconds else 0.0
            print(
                f"{level:>11} {setup:>10} {len(s.pairs):>6} {rate:>8.0f}"
                f" {percentile_ms(s.calls, 0.5):>7.3f}ms {percentile_ms(s.calls, 0.99):>7.3f}ms"
                f" {percentile_ms(s.pairs, 0.5):>7.3f}ms {percentile_ms(s.pairs, 0.99):>7.3f}ms {s.errors:>6}"
            )
            errors += s.errors
    for level, by_setup in results.items():
        plain = by_setup["plaintext"].calls
        for setup in SETUPS[1:]:
            calls = by_setup[setup].calls
            p50 = percentile_ms(calls, 0.5) - percentile_ms(plain, 0.5)
            p99 = percentile_ms(calls, 0.99) - percentile_ms(plain, 0.99)
            print(f"{setup} adds per call at concurrency {level}: p50 {p50:+.3f} ms, p99 {p99:+.3f} ms")
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3000, help="pairs per set-up at --concurrency")
    parser.add_argument("--sequential-pairs", type=int, default=600, help="pairs per set-up one at a time")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds the pairs are split into")
    parser.add_argument("--warmup", type=int, default=300, help="unmeasured pairs per set-up first")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop issuing pairs after this")
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
        results = uvloop.run(measure(ports, pki, args))
    return report(results)


if __name__ == "__main__":
    sys.exit(main())
