from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .proxy_fakes import FakeServer, ProxyMaker


@pytest.fixture
async def fakes() -> AsyncIterator[list[FakeServer]]:
    servers = [await FakeServer("inst-a").start(), await FakeServer("inst-b").start()]
    yield servers
    for server in servers:
        await server.stop()


@pytest.fixture
async def make_proxy() -> AsyncIterator[ProxyMaker]:
    maker = ProxyMaker()
    yield maker
    await maker.close()
