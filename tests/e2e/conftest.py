"""Fixtures of the end-to-end harness: one redis-server and one Redis Cluster for the session, a
clean slate per test. A test marked `ledgers` runs twice, on one Redis and on the cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from rllocal.redis_cluster import LocalCluster

from .harness import Harness, RedisServer

BACKENDS = ("redis", "cluster")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three masters, no replicas: started only by the first test that runs on the cluster."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """Where the ledger lives: "redis" unless the test is parametrised over BACKENDS."""
    return str(getattr(request, "param", "redis"))


@pytest.fixture
async def harness(
    backend: str, redis_server: RedisServer, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Harness]:
    """Cleans Redis, and tears down every process the test started, even when it fails."""
    cluster = request.getfixturevalue("redis_cluster") if backend == "cluster" else None
    h = Harness(redis_server, tmp_path, redis_cluster=cluster)
    h.clean_redis()
    try:
        yield h
    finally:
        h.teardown_infrastructure()
        await h.close_channels()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("ledgers") is not None:
        metafunc.parametrize("backend", BACKENDS, indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
