"""Finished-job indexes shrink with their retention even when no further job finishes.

Found by the soak test: with a short completed retention, the ids of the last jobs to finish
stayed in the ``completed`` index (and Redis memory stayed above its baseline) after their
records had expired, because only the next ack trimmed the index. Since Engine 2 records carry
no expiry: the queue's housekeeper trims records, index and ledger entries together.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis_server import RedisServer

from workqueue.broker import Broker, BrokerConfig
from workqueue.broker.connection import create_redis
from workqueue.broker.contract import FinishOp, OpKind
from workqueue.job import NewJob


@pytest.fixture
async def short_retention(private_redis: RedisServer, key_prefix: str) -> AsyncIterator[Broker]:
    config = BrokerConfig(prefix=key_prefix, completed_ttl_s=0.3, failed_ttl_s=0.3)
    broker = Broker(create_redis(private_redis.url), config)
    yield broker
    await broker.redis.aclose()


def new_job() -> NewJob:
    return NewJob(id=uuid.uuid4().hex, type="t", queue="q", payload=b"{}", retries=0, timeout=10.0)


async def test_housekeeping_trims_finished_records_past_retention(short_retention: Broker) -> None:
    broker = short_retention
    k = broker.keys("q")
    # Given one completed and one failed job, finished in the last batch there ever was
    await broker.enqueue([new_job(), new_job()])
    res = await broker.reserve("q", 2, lease_ms=5000, worker_id="w", request_id="r1")
    done, bad = res.jobs
    outcomes = await broker.finish(
        {
            "q": [
                FinishOp(OpKind.ACK, done.id, done.token),
                FinishOp(OpKind.FAIL, bad.id, bad.token, "x"),
            ]
        }
    )
    assert outcomes == {"q": ["completed", "failed"]}
    assert await broker.redis.zcard(k.completed) == 1
    assert await broker.redis.zcard(k.failed) == 1
    # (the records carry no expiry: housekeeping trims them, the hot path saves a command)
    assert await broker.redis.pttl(k.job(done.id)) == -1
    # When the retention passes and one housekeeping step runs (nothing else happens)
    await asyncio.sleep(0.5)
    step = await broker.housekeep("q", worker_id="w", duty_ms=5000)
    # Then the records are gone, with their index and ledger entries
    assert step.held and step.trimmed == 2
    assert not await broker.redis.exists(k.job(done.id), k.job(bad.id))
    assert await broker.redis.zcard(k.completed) == 0
    assert await broker.redis.zcard(k.failed) == 0
    assert await broker.redis.zcard(k.ledger) == 0
