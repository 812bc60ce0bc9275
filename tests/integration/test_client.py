"""The Python client of SPEC section 3: Client and SyncClient against the real Redis."""

from __future__ import annotations

import pytest
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
