"""The server-side flags both servers share (TLS, tokens, log format) and how a server applies them."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import grpc
import grpc.aio

from .auth import BearerAuth, Tokens
from .errors import SetupError
from .interceptors import Handler, Interceptor
from .logs import FORMATS, with_call_fields
from .parsing import parsing
from .tls import server_credentials


def port_number(value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (0-65535; 0 picks a free one)")
    return int(value)


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The flags both servers take for operations: TLS, tokens, log format and metrics."""
    group = parser.add_argument_group("TLS, tokens, logs and metrics")
    group.add_argument("--tls-cert", type=Path, help="PEM certificate (chain) to serve TLS with; needs --tls-key")
    group.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    group.add_argument(
        "--tls-client-ca", type=Path, help="PEM CA: clients must present a certificate it signed (mutual TLS)"
    )
    group.add_argument(
        "--auth-token-file",
        type=Path,
        help="tokens, one a line: RateLimiter calls must carry 'authorization: Bearer <token>'; re-read on SIGHUP",
    )
    group.add_argument("--log-format", choices=FORMATS, default="text", help="json: one JSON object per line")
    group.add_argument(
        "--metrics-port", type=port_number, help="serve Prometheus metrics at http://HOST:PORT/metrics (default: off)"
    )


@dataclass(frozen=True)
class ServerSetup:
    credentials: grpc.ServerCredentials | None = None
    tokens: Tokens | None = None
    call_fields: bool = False
    # Handlers that decode their requests answer one that does not parse with INVALID_ARGUMENT.
    parse_errors: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace, *, decoded_requests: bool) -> ServerSetup:
        """Reads the files the flags name; raises SetupError naming the flag or file at fault.

        JSON logs carry the ids of the call being served only where the handlers get decoded
        requests (`decoded_requests`): a pass-through of bytes has none to offer.
        """
        if (args.tls_cert is None) != (args.tls_key is None):
            raise SetupError("--tls-cert and --tls-key go together: give both or neither")
        if args.tls_client_ca is not None and args.tls_cert is None:
            raise SetupError("--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS first")
        credentials = (
            server_credentials(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert is not None else None
        )
        tokens = Tokens(args.auth_token_file) if args.auth_token_file is not None else None
        return cls(credentials, tokens, decoded_requests and args.log_format == "json", decoded_requests)

    def interceptors(self, service: str) -> list[Interceptor]:
        """Only what needs a call's metadata, authentication: an interceptor runs on every call, so
        what a handler can be wrapped in once is done by `handlers` instead."""
        return [BearerAuth(self.tokens, service)] if self.tokens is not None else []

    def handlers(self, method_handlers: Mapping[str, Handler]) -> dict[str, Handler]:
        """A service's handlers, by method name, wrapped once for registration: unary-request handlers
        that decode their requests refuse bytes that do not parse, and with JSON logs put the
        request's ids on the lines logged while serving it."""
        wrapped: dict[str, Handler] = {}
        for method, handler in method_handlers.items():
            if self.call_fields:
                handler = with_call_fields(handler)
            if self.parse_errors and handler.request_deserializer is not None and not handler.request_streaming:
                handler = parsing(handler, method)
            wrapped[method] = handler
        return wrapped

    def bind(self, server: grpc.aio.Server, address: str) -> int:
        """The bound port: TLS only when credentials are set, plaintext otherwise; 0 when it failed."""
        if self.credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, self.credentials)

    def reload_on_sighup(self, *more: Tokens | None) -> None:
        """SIGHUP re-reads the token file and `more` (a bad file keeps its old tokens); call on the running loop."""
        files = {id(tokens): tokens for tokens in (self.tokens, *more) if tokens is not None}
        if not files:
            return

        def reload() -> None:
            for tokens in files.values():
                tokens.reload()

        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)


# No TLS, no tokens, text logs: how a server runs without the flags.
PLAIN: Final = ServerSetup()
