from __future__ import annotations

from collections.abc import Iterator

import pytest
from rlclient import RateLimitClient
from rlclient_fake import FAST_RETRY, FakeLimiter, serve


@pytest.fixture
def fake() -> Iterator[tuple[str, FakeLimiter]]:
    with serve() as served:
        yield served


@pytest.fixture
def limiter(fake: tuple[str, FakeLimiter]) -> FakeLimiter:
    return fake[1]


@pytest.fixture
def client(fake: tuple[str, FakeLimiter]) -> Iterator[RateLimitClient]:
    with RateLimitClient(fake[0], retry=FAST_RETRY, rpc_timeout=5) as c:
        yield c
