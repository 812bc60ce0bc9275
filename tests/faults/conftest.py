"""Fixtures of the fault-injection suite: private redis-servers and real service processes.

Each test that breaks Redis gets a redis-server of its own (append-only file on) on a free port
in its temp dir, so the shared server on 6379 is never killed, slowed or flushed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis_server import RedisServer
from services import Services

RedisFactory = Callable[..., RedisServer]


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[RedisFactory]:
    """``redis_factory(appendfsync="everysec", extra_args=[...], start=True)`` -> a started
    private server; every server made is SIGKILLed at the end of the test."""
    made: list[RedisServer] = []

    def make(*, start: bool = True, **kwargs: object) -> RedisServer:
        directory = tmp_path / f"redis-{len(made)}"
        directory.mkdir()
        server = RedisServer(directory, **kwargs)  # type: ignore[arg-type]
        made.append(server)
        if start:
            server.start()
        return server

    yield make
    for server in made:
        server.close()


@pytest.fixture
def private_redis(redis_factory: RedisFactory) -> RedisServer:
    """One private redis-server with ``appendfsync always``."""
    return redis_factory()


@pytest.fixture
def services(installed_test_plugin: None, key_prefix: str, tmp_path: Path) -> Iterator[Services]:
    """Worker and producer subprocesses for this test (on its own key prefix)."""
    procs = Services(tmp_path, key_prefix)
    yield procs
    procs.stop_all()
