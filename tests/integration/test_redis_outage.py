"""The worker outlives a Redis outage: it backs off, reconnects and resumes fetching."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_server import RedisServer
from wq_testkit import TEST_PLUGIN, WorkerProcs

from workqueue.broker import Broker, BrokerConfig
from workqueue.broker.connection import create_redis
from workqueue.client import Client
from workqueue.registry import build_registry

pytestmark = pytest.mark.slow


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


async def wait_done(url: str, prefix: str, job_id: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while True:
        broker = Broker(create_redis(url, retries=0), BrokerConfig(prefix=prefix))
        try:
            info = await broker.get_job(job_id)
            if info.status == "completed":
                return info.status
        except Exception:
            pass
        finally:
            await broker.redis.aclose()
        assert time.monotonic() < deadline, "job never completed after Redis came back"
        await asyncio.sleep(0.1)


async def test_worker_resumes_after_redis_restart(
    installed_test_plugin: None, private_redis: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    # Given a worker consuming from a private Redis
    workers = WorkerProcs(key_prefix, tmp_path)
    try:
        worker = workers.start(env={"WORKQUEUE_REDIS_URL": private_redis.url}, lease=2.0)
        client = Client(
            Broker(create_redis(private_redis.url), BrokerConfig(prefix=key_prefix)),
            build_registry(only=[TEST_PLUGIN]),
        )
        first = await client.enqueue("test_echo", {"n": 1})
        await wait_done(private_redis.url, key_prefix, first.id)
        await client.aclose()
        # When Redis is SIGKILLed, stays down for 2 s, and comes back with its data
        private_redis.kill()
        await asyncio.sleep(2)
        private_redis.start()
        client = Client(
            Broker(create_redis(private_redis.url), BrokerConfig(prefix=key_prefix)),
            build_registry(only=[TEST_PLUGIN]),
        )
        second = await client.enqueue("test_echo", {"n": 2})
        # Then the same worker process, never restarted, runs the new job
        await wait_done(private_redis.url, key_prefix, second.id)
        await client.aclose()
        assert worker.poll() is None
        log = workers.log_file(0).read_text()
        assert "redis unavailable" in log
    finally:
        workers.stop_all()
