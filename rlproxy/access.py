"""How the proxy reaches its targets: plaintext or TLS, and the token on the calls it makes itself.

Forwarded calls carry the client's own metadata (its token included) and never this token: a
client must not be able to borrow the proxy's rights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc
from grpc import aio

from rlcommon.auth import Tokens, bearer


@dataclass(frozen=True)
class TargetAccess:
    credentials: grpc.ChannelCredentials | None = None
    tokens: Tokens | None = None

    def channel(self, address: str, options: Sequence[tuple[str, Any]]) -> aio.Channel:
        if self.credentials is None:
            return aio.insecure_channel(address, options=options)
        return aio.secure_channel(address, self.credentials, options=options)

    def metadata(self) -> tuple[tuple[str, str]] | None:
        """For the proxy's own RateLimiter calls (the probes that learn instance ids and loads)."""
        return bearer(self.tokens.first) if self.tokens is not None else None


PLAINTEXT: Final = TargetAccess()
