"""TLS material made at test time (trustme), and the client credentials the TLS and token tests use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
import trustme


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path
    # A CA that signed none of these: trusting it alone must not let a client in.
    other_ca: Path

    def server_args(self, *, mutual: bool = False) -> list[str]:
        args = ["--tls-cert", str(self.cert), "--tls-key", str(self.key)]
        return [*args, "--tls-client-ca", str(self.ca)] if mutual else args

    def target_args(self, *, client_cert: bool = False) -> list[str]:
        """The proxy's flags for TLS to its targets."""
        args = ["--target-ca", str(self.ca)]
        return (
            [*args, "--target-cert", str(self.client_cert), "--target-key", str(self.client_key)]
            if client_cert
            else args
        )

    def credentials(self, *, client_cert: bool = False, ca: Path | None = None) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=(ca or self.ca).read_bytes(),
            private_key=self.client_key.read_bytes() if client_cert else None,
            certificate_chain=self.client_cert.read_bytes() if client_cert else None,
        )


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client.rl.test")
    pki = Pki(
        ca=folder / "ca.pem",
        cert=folder / "server.pem",
        key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        other_ca=folder / "other-ca.pem",
    )
    ca.cert_pem.write_to_path(str(pki.ca))
    other.cert_pem.write_to_path(str(pki.other_ca))
    for leaf, cert, key in ((server, pki.cert, pki.key), (client, pki.client_cert, pki.client_key)):
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
    return pki


def with_token(token: str, tls: grpc.ChannelCredentials | None = None) -> grpc.ChannelCredentials:
    """`authorization: Bearer <token>` on every call; without TLS over loopback only, as gRPC allows."""
    transport = tls or grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    return grpc.composite_channel_credentials(transport, grpc.access_token_call_credentials(token))
