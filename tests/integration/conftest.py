"""Fixtures of the integration tests that drive the broker on a private redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis_server import RedisServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server (no persistence) for one test module: its counters (INFO
    commandstats, memory) see only that module's traffic."""
    srv = RedisServer(tmp_path_factory.mktemp("redis"), appendonly=False)
    srv.start()
    yield srv
    srv.close()


@pytest.fixture
def admin(server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client of :func:`server`, emptied and its statistics reset before each test."""
    conn = server.client()
    conn.flushall()  # our private server only
    conn.config_resetstat()
    yield conn
    conn.close()
