"""Finished-job indexes shrink with their retention even when no further job finishes.

Found by the soak test: with a short completed retention, the ids of the last jobs to finish
stayed in the ``completed`` index (and Redis memory stayed above its baseline) after their
records had expired, because only the next ack trimmed the index. An idle worker's reserve
(its housekeeping round, at least every ``idle_wait_seconds``) must trim it too.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis_server import RedisServer

from workqueue.broker import Broker, BrokerConfig, FinishOp
from workqueue.broker.connection import create_redis
from workqueue.job import NewJob


@pytest.fixture
async def short_retention(private_redis: RedisServer, key_prefix: str) -> AsyncIterator[Broker]:
    config = BrokerConfig(prefix=key_prefix, completed_ttl_s=0.3, failed_ttl_s=0.3)
    broker = Broker(create_redis(private_redis.url), config)
    yield broker
    await broker.redis.aclose()


def new_job() -> NewJob:
    return NewJob(id=uuid.uuid4().hex, type="t", queue="q", payload=b"{}", retries=0, timeout=10.0)


async def test_idle_reserve_trims_expired_finished_entries(short_retention: Broker) -> None:
    broker = short_retention
    k = broker.keys("q")
    # Given one completed and one failed job, finished in the last batch there ever was
    await broker.enqueue([new_job(), new_job()])
    (res,) = await broker.reserve([("q", 2)], lease_ms=5000, worker_id="w")
    done, bad = res.jobs
    outcomes = await broker.finish(
        {"q": [FinishOp("ack", done.id, done.token), FinishOp("fail", bad.id, bad.token, "x")]}
    )
    assert outcomes == {"q": ["completed", "failed"]}
    assert await broker.redis.zcard(k.completed) == 1
    assert await broker.redis.zcard(k.failed) == 1
    # When the retention passes and an idle worker's reserve runs (nothing to hand out)
    await asyncio.sleep(0.5)
    assert not await broker.redis.exists(k.job(done.id), k.job(bad.id))
    (idle,) = await broker.reserve([("q", 5)], lease_ms=5000, worker_id="w")
    # Then both indexes are empty again: no id of an expired record is left behind
    assert idle.jobs == []
    assert await broker.redis.zcard(k.completed) == 0
    assert await broker.redis.zcard(k.failed) == 0
