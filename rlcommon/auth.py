"""Bearer tokens: the token file, and the server interceptor that makes one service's calls carry one
and hands the token's scope (rlcommon.scopes) to the handler.

Tokens are secrets: no message, log line or exception here ever contains one.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final, cast

import grpc
import grpc.aio

from .errors import SetupError
from .interceptors import Context, Continuation, Handler, Interceptor
from .scopes import CALLER, Scope, ScopeLineError, parse_scope

log = logging.getLogger(__name__)

AUTHORIZATION: Final = "authorization"
# Header values travel as printable ASCII; a space inside a token could not be told from the scheme's.
_TOKEN: Final = re.compile(r"[\x21-\x7e]+")


def load_tokens(path: Path) -> tuple[tuple[bytes, Scope], ...]:
    """One token a line, with its scope; blank lines and lines starting with # are skipped. Raises SetupError."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SetupError(f"token file {path}: cannot read it ({reason})") from None
    tokens: list[tuple[bytes, Scope]] = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        token = fields[0]
        if not _TOKEN.fullmatch(token):
            raise SetupError(f"token file {path}, line {number}: a token is printable ASCII without spaces")
        try:
            scope = parse_scope(fields[1:])
        except ScopeLineError as e:
            raise SetupError(f"token file {path}, line {number}: {e}") from None
        tokens.append((token.encode(), scope))
    if not tokens:
        raise SetupError(f"token file {path}: no token in it (one a line; blank and # lines are skipped)")
    return tuple(tokens)


def bearer(token: str) -> tuple[tuple[str, str]]:
    """The call metadata that presents `token`."""
    return ((AUTHORIZATION, f"Bearer {token}"),)


class Tokens:
    """The tokens of one file; `reload` swaps them only for a file that is good."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tokens = load_tokens(path)

    @property
    def first(self) -> str:
        """The token this process presents on its own calls."""
        return self._tokens[0][0].decode()

    def reload(self) -> None:
        try:
            tokens = load_tokens(self.path)
        except SetupError as e:
            log.warning("%s; keeping the %d tokens read before", e, len(self._tokens))
            return
        self._tokens = tokens
        log.info("token file %s re-read: %d tokens", self.path, len(tokens))

    def identify(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Scope | str:
        """The scope of the accepted token this metadata carries, else why the call is refused."""
        header = next((value for key, value in metadata or () if key == AUTHORIZATION), None)
        if header is None:
            return f"this server requires a token: send the metadata '{AUTHORIZATION}: Bearer <token>' with every call"
        if isinstance(header, bytes):
            header = header.decode("latin-1")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return f"the '{AUTHORIZATION}' metadata must be 'Bearer <token>'"
        scope = self._scope_of(token.strip().encode("utf-8", "replace"))
        if scope is None:
            return "the bearer token is not one this server accepts (wrong, or revoked when the token file changed)"
        return scope

    def _scope_of(self, token: bytes) -> Scope | None:
        # Every token is compared, in constant time each, so timing tells neither which nor how much matched.
        found: Scope | None = None
        for known, scope in self._tokens:
            if hmac.compare_digest(known, token):
                found = scope
        return found


def _refusing(handler: Handler, message: str) -> Handler:
    """A handler of `handler`'s kind that answers UNAUTHENTICATED without running it."""

    async def refuse(request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


def _scoped(handler: Handler, scope: Scope) -> Handler:
    """`handler` run with `scope` as the caller's; only unary methods check scopes (streams are
    open to any accepted token), so only they are wrapped."""
    # The stubs type the behaviour of a sync server; an aio server's is a coroutine function.
    behavior = cast(Callable[[Any, Context], Awaitable[Any]], handler.unary_unary)

    async def run(request: Any, context: Context) -> Any:
        reset = CALLER.set(scope)
        try:
            return await behavior(request, context)
        finally:
            CALLER.reset(reset)

    return grpc.unary_unary_rpc_method_handler(
        run, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


class BearerAuth(Interceptor):
    """Every method of `service`, streaming ones included, needs an accepted token; the other
    services (health, reflection) stay open. A restricted token's scope reaches the handler in
    `CALLER`; an unrestricted one's call runs the handler as it is."""

    def __init__(self, tokens: Tokens, service: str) -> None:
        self._tokens = tokens
        self._prefix = f"/{service}/"

    async def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails) -> Handler:
        # None (an unknown method) at run time, whatever the stubs say.
        handler = await continuation(details)
        if handler is None or not details.method.startswith(self._prefix):
            return handler
        scope = self._tokens.identify(details.invocation_metadata)
        if isinstance(scope, str):
            return _refusing(handler, scope)
        if not scope.restricted or handler.request_streaming or handler.response_streaming:
            return handler
        return _scoped(handler, scope)
