"""TLS credentials from PEM files: the server side (optionally mTLS) and the client side."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from .errors import SetupError


def read_pem(path: Path, what: str, marker: str = "-----BEGIN ") -> bytes:
    """The file's bytes; raises SetupError naming the file when it is unreadable or not PEM."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SetupError(f"{what} {path}: cannot read it ({e.strerror or e})") from None
    if marker.encode() not in data:
        raise SetupError(f"{what} {path}: no PEM block containing {marker.strip()!r} in it")
    return data


def server_credentials(cert: Path, key: Path, client_ca: Path | None = None) -> grpc.ServerCredentials:
    """With `client_ca`, clients must present a certificate that CA signed (mutual TLS)."""
    pair = key_pair(cert, key)
    ca = read_pem(client_ca, "client CA", "CERTIFICATE-----") if client_ca is not None else None
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)


def key_pair(cert: Path, key: Path) -> tuple[bytes, bytes]:
    """(private key, certificate chain) as PEM bytes. Raises SetupError unless both read and `key`
    is the unencrypted private key of `cert`: gRPC itself would only fail to bind, or to connect,
    without saying why."""
    pair = read_pem(key, "TLS key", "PRIVATE KEY-----"), read_pem(cert, "TLS certificate", "CERTIFICATE-----")
    try:
        # An encrypted key gets this empty password rather than a prompt on the terminal.
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=b"")
    except ssl.SSLError as e:
        raise SetupError(
            f"TLS key {key} does not go with the certificate {cert} ({e.reason or e}):"
            " it must be the certificate's unencrypted private key"
        ) from None
    return pair


def channel_credentials(
    ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    """Trusts `ca` (else the system roots) and presents `cert`/`key` when the server asks for one."""
    if (cert is None) != (key is None):
        raise SetupError("a client certificate and its key go together: give both or neither")
    root = read_pem(ca, "CA", "CERTIFICATE-----") if ca is not None else None
    if cert is None or key is None:
        return grpc.ssl_channel_credentials(root_certificates=root)
    private_key, chain = key_pair(cert, key)
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=private_key, certificate_chain=chain)
