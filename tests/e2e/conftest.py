"""Fixtures of the end-to-end harness: one redis-server for the session, a clean slate per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from .harness import Harness, RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def harness(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Harness]:
    """Cleans Redis, and tears down every process the test started, even when it fails."""
    h = Harness(redis_server, tmp_path)
    h.clean_redis()
    try:
        yield h
    finally:
        h.teardown_infrastructure()
        await h.close_channels()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
