"""TLS credentials from PEM files, and the bearer token every call carries."""

from __future__ import annotations

import os
import re
from pathlib import Path

import grpc

_TOKEN = re.compile(r"[\x21-\x7e]+")


def tls_credentials(
    ca: str | os.PathLike[str] | None = None,
    cert: str | os.PathLike[str] | None = None,
    key: str | os.PathLike[str] | None = None,
) -> grpc.ChannelCredentials:
    """TLS that trusts ``ca`` (a PEM file; None: the system's roots) and, for a server that asks
    for client certificates (mutual TLS), presents ``cert`` with its ``key``."""
    if (cert is None) != (key is None):
        raise ValueError("cert and key go together: give both or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes() if ca is not None else None,
        private_key=Path(key).read_bytes() if key is not None else None,
        certificate_chain=Path(cert).read_bytes() if cert is not None else None,
    )


def token_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    """The metadata that presents ``token`` (surrounding whitespace, say a file's newline, dropped)."""
    if token is None:
        return None
    token = token.strip()
    if not _TOKEN.fullmatch(token):
        raise ValueError("a token is printable ASCII without spaces")
    return (("authorization", f"Bearer {token}"),)
