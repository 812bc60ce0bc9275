"""The Python client of SPEC section 3: Client and SyncClient against the real Redis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from redis_server import RedisServer
from wq_testkit import REDIS_URL, TEST_PLUGIN

from workqueue import Client, PayloadValidationError, SyncClient, TaskSpec, UnknownJobTypeError
from workqueue.broker import BrokerConfig
from workqueue.errors import JobNotFound
from workqueue.registry import build_registry


def test_sync_client_enqueues_and_reads(installed_test_plugin: None, key_prefix: str) -> None:
    client = SyncClient.from_url(
        REDIS_URL,
        registry=build_registry(only=[TEST_PLUGIN]),
        config=BrokerConfig(prefix=key_prefix),
    )
    try:
        job = client.enqueue("test_sync_add", {"a": 1, "b": 2}, retries=1)
        assert job.status == "queued" and job.retries == 1
        info = client.get_job(job.id)
        assert info.type == "test_sync_add" and info.status == "queued" and info.attempts == 0
        jobs = client.enqueue_many([("test_echo", {"i": 1}), ("test_echo", {"i": 2})])
        assert len({j.id for j in jobs}) == 2
        with pytest.raises(PayloadValidationError) as bad:
            client.enqueue("test_sync_add", {"a": "x", "b": 2})
        assert bad.value.field == "payload.a"
        with pytest.raises(JobNotFound):
            client.get_job("nope")
    finally:
        client.close()


async def test_async_client_validates_before_writing(
    installed_test_plugin: None, key_prefix: str
) -> None:
    client = Client.from_url(
        REDIS_URL,
        registry=build_registry(only=[TEST_PLUGIN]),
        config=BrokerConfig(prefix=key_prefix),
    )
    async with client:
        with pytest.raises(UnknownJobTypeError) as unknown:
            await client.enqueue_many([TaskSpec("test_echo", {}), TaskSpec("os.system", {})])
        assert "test_echo" in unknown.value.known
        # all-or-nothing: the valid first task was not written either
        assert await client.broker.known_queues() == []
        job = await client.enqueue("test_echo", {"k": "v"}, delay=30, queue="mail")
        assert job.status == "scheduled" and job.queue == "mail"
        assert (await client.get_job(job.id)).queue == "mail"


async def test_types_only_live_workers_advertise_are_read_once_not_per_enqueue(
    tmp_path: Path,
) -> None:
    """A client lacking a job type (the producer without the plugin) accepts it when a live
    worker advertises it; the adverts are cached, not read again for every enqueue (issue 10,
    defect 8: two extra round trips and O(workers) per enqueue)."""
    server = RedisServer(tmp_path, appendonly=False)
    server.start()
    try:
        raw = server.client()
        advert = {
            "id": "w1",
            "host": "h",
            "pid": 1,
            "queues": ["default"],
            "types": ["remote_only"],
            "concurrency": 1,
            "started_at": 0.0,
        }
        raw.set("cache:worker:w1", json.dumps(advert), ex=60)
        now_s, now_us = raw.time()
        raw.zadd("cache:workers", {"w1": now_s * 1000 + now_us // 1000})
        raw.config_resetstat()
        client = Client.from_url(
            server.url, registry=build_registry(only=[]), config=BrokerConfig(prefix="cache")
        )
        async with client:
            for i in range(20):
                job = await client.enqueue("remote_only", {"i": i})
                assert job.status == "queued"
        registry_reads = raw.info("commandstats").get("cmdstat_zrange", {}).get("calls", 0)
        assert registry_reads <= 2, f"the worker registry was read {registry_reads} times"
    finally:
        server.close()
