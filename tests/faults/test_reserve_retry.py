"""A reserve whose reply is cut and retried by the client hands out the jobs the first call
leased, instead of leasing more and leaving the first ones leased to nobody (each such orphan
cost a lost lease; three and the job failed for good without ever running)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis
from fault_proxy import FaultProxy
from redis_server import RedisServer

from workqueue.broker import Broker, BrokerConfig
from workqueue.broker.connection import create_redis
from workqueue.broker.contract import FinishOp, OpKind
from workqueue.job import NewJob


def _job(n: int) -> NewJob:
    return NewJob(
        id=f"job-{n}",
        type="test_echo",
        payload=b'{"n": %d}' % n,
        queue="q1",
        retries=0,
        timeout=10.0,
    )


@pytest.fixture
async def brokers(
    private_redis: RedisServer, key_prefix: str
) -> AsyncIterator[tuple[Broker, Broker, FaultProxy]]:
    proxy = FaultProxy(private_redis.port).start()
    config = BrokerConfig(prefix=key_prefix)
    direct = Broker(create_redis(private_redis.url), config)
    proxied = Broker(create_redis(proxy.url, retries=2), config)
    yield direct, proxied, proxy
    await direct.redis.aclose()
    await proxied.redis.aclose()
    proxy.close()


async def test_retried_reserve_gets_the_jobs_the_lost_reply_carried(
    brokers: tuple[Broker, Broker, FaultProxy],
) -> None:
    direct, proxied, proxy = brokers
    # Given three queued jobs, the scripts loaded and the proxied client connected
    await direct.enqueue([_job(n) for n in range(3)])
    await direct.reserve("warm", 1, lease_ms=1000, worker_id="W", request_id="warm")
    await proxied.redis.ping()
    # (create_redis's one-off cluster probe was a connection of its own)
    accepted = proxy.stats.accepted

    # When the reply to a reserve of two is cut by an RST and the client retries the call
    proxy.reset_replies(every=1, keep=3, times=1)
    result = await proxied.reserve("q1", 2, lease_ms=5000, worker_id="W", request_id="r0")

    # Then the retry hands out the two jobs the first call leased, and leases nothing else
    assert proxy.stats.resets == 1
    assert proxy.stats.accepted == accepted + 1  # retried on a new connection
    assert result.replayed
    k = direct.keys("q1")
    active = sorted(m.decode() for m in await direct.redis.zrange(k.active, 0, -1))
    assert sorted(j.id for j in result.jobs) == active == ["job-0", "job-1"]
    assert await direct.redis.llen(k.queued) == 1
    assert all(j.attempt == 1 for j in result.jobs)
    # ... under the tokens the first call gave them, so their outcomes are accepted
    ops = [FinishOp(OpKind.ACK, j.id, j.token, b'"ok"') for j in result.jobs]
    assert await direct.finish({"q1": ops}) == {"q1": ["completed", "completed"]}


async def test_a_caller_retrying_with_the_same_request_id_gets_the_same_jobs(
    private_redis: RedisServer, key_prefix: str
) -> None:
    # Given a client that does not retry by itself (the worker's fetch loop retries instead)
    proxy = FaultProxy(private_redis.port).start()
    config = BrokerConfig(prefix=key_prefix)
    direct = Broker(create_redis(private_redis.url), config)
    proxied = Broker(create_redis(proxy.url, retries=0), config)
    try:
        await direct.enqueue([_job(n) for n in range(3)])
        await direct.reserve("warm", 1, lease_ms=1000, worker_id="W", request_id="warm")
        await proxied.redis.ping()
        # When the reserve's reply is cut, and the caller calls again with the same id
        proxy.reset_replies(every=1, keep=3, times=1)
        with pytest.raises(redis.ConnectionError):
            await proxied.reserve("q1", 2, lease_ms=5000, worker_id="W", request_id="r1")
        again = await proxied.reserve("q1", 2, lease_ms=5000, worker_id="W", request_id="r1")
        assert again.replayed
        # Then it gets the two jobs leased by the call whose reply was lost
        active = sorted(
            m.decode() for m in await direct.redis.zrange(direct.keys("q1").active, 0, -1)
        )
        assert sorted(j.id for j in again.jobs) == active == ["job-0", "job-1"]
        # ... and a new id leases what is left
        fresh = await proxied.reserve("q1", 2, lease_ms=5000, worker_id="W", request_id="r2")
        assert [j.id for j in fresh.jobs] == ["job-2"]
    finally:
        await direct.redis.aclose()
        await proxied.redis.aclose()
        proxy.close()
