"""The enqueue path's round trips, on a private redis-server whose command counts are ours alone.

Proves: a sequential ``Client.enqueue`` is exactly one script call; concurrent calls are
coalesced into few script calls, yet each caller gets its own answer or its own error (a bad
task, an idempotency conflict) and an idempotent repeat still answers with the existing job;
a caller cancelled while waiting for the next batch is not written; ``enqueue_many`` writes
big batches in chunks, in order; the enqueue connection survives being killed and a
``SCRIPT FLUSH`` without writing a job twice or calling it a duplicate; a Redis that stops
answering is a timeout (not a hang) and the next call works once it answers again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_server import RedisServer
from wq_testkit import TEST_PLUGIN

from workqueue import Client, PayloadValidationError, TaskSpec
from workqueue.broker import Broker, BrokerConfig
from workqueue.broker.broker import ENQUEUE_CHUNK
from workqueue.broker.connection import create_redis
from workqueue.errors import IdempotencyConflict, UnknownJobTypeError
from workqueue.job import EnqueuedJob
from workqueue.registry import build_registry

PREFIX = "wqbatch"


@pytest.fixture
async def client(
    installed_test_plugin: None, server: RedisServer, admin: redis.Redis
) -> AsyncIterator[Client]:
    broker = Broker(create_redis(server.url), BrokerConfig(prefix=PREFIX))
    async with Client(broker, build_registry(only=[TEST_PLUGIN])) as wq:
        yield wq


def evalsha_calls(admin: redis.Redis) -> int:
    stats = admin.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0))


def queued(admin: redis.Redis, queue: str = "default") -> list[str]:
    return [x.decode() for x in admin.lrange(f"{PREFIX}:{{{queue}}}:queued", 0, -1)]


async def test_sequential_enqueue_is_one_script_call_each(
    client: Client, admin: redis.Redis
) -> None:
    await client.enqueue("test_echo", {"warm": 1})
    before = evalsha_calls(admin)
    jobs = [await client.enqueue("test_echo", {"i": i}) for i in range(20)]
    assert evalsha_calls(admin) - before == 20
    assert queued(admin)[1:] == [job.id for job in jobs]
    assert all(job.status == "queued" and not job.duplicate for job in jobs)


async def test_concurrent_enqueues_share_round_trips(client: Client, admin: redis.Redis) -> None:
    jobs = await asyncio.gather(*(client.enqueue("test_echo", {"i": i}) for i in range(2000)))
    # the first call goes alone, the rest wait for it and go together (in 1000-job chunks);
    # one more: the queue's registration in <p>:queues, once per process and queue
    assert evalsha_calls(admin) <= 2 + -(-1999 // ENQUEUE_CHUNK)
    assert len({job.id for job in jobs}) == 2000
    assert sorted(queued(admin)) == sorted(job.id for job in jobs)
    payloads = {admin.hget(f"{PREFIX}:{{default}}:job:{job.id}", "payload") for job in jobs}
    assert len(payloads) == 2000


async def test_each_concurrent_caller_gets_its_own_error(
    client: Client, admin: redis.Redis
) -> None:
    def call(i: int) -> Coroutine[Any, Any, EnqueuedJob]:
        if i == 10:
            return client.enqueue("test_sync_add", {"a": "x", "b": 1})
        if i == 20:
            return client.enqueue("no_such_type", {})
        if i == 30:
            return client.enqueue("test_echo", {}, queue="bad queue")
        return client.enqueue("test_sync_add", {"a": i, "b": 1})

    calls = [call(i) for i in range(50)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[10], PayloadValidationError) and results[10].field == "payload.a"
    assert isinstance(results[20], UnknownJobTypeError)
    assert type(results[30]).__name__ == "TaskValidationError"
    ok = [r for i, r in enumerate(results) if i not in (10, 20, 30)]
    assert all(not isinstance(r, BaseException) for r in ok)
    assert sorted(queued(admin)) == sorted(r.id for r in ok)  # type: ignore[union-attr]


async def test_idempotency_inside_one_batch(client: Client, admin: redis.Redis) -> None:
    first, again, other, conflict = await asyncio.gather(
        client.enqueue("test_echo", {"k": 1}, idempotency_key="same"),
        client.enqueue("test_echo", {"k": 1}, idempotency_key="same"),
        client.enqueue("test_echo", {"k": 2}, idempotency_key="other"),
        client.enqueue("test_echo", {"k": 3}, idempotency_key="same"),
        return_exceptions=True,
    )
    assert not isinstance(first, BaseException) and not first.duplicate
    assert not isinstance(again, BaseException) and again.duplicate and again.id == first.id
    assert not isinstance(other, BaseException) and not other.duplicate
    assert isinstance(conflict, IdempotencyConflict)
    assert sorted(queued(admin)) == sorted([first.id, other.id])


async def test_a_cancelled_waiting_caller_is_not_written(
    client: Client, admin: redis.Redis
) -> None:
    leader = asyncio.ensure_future(client.enqueue("test_echo", {"n": 1}))
    await asyncio.sleep(0)  # the leader's write is in flight
    waiter = asyncio.ensure_future(client.enqueue("test_echo", {"n": 2}))
    follower = asyncio.ensure_future(client.enqueue("test_echo", {"n": 3}))
    await asyncio.sleep(0)  # both joined the next batch
    waiter.cancel()
    first, third = await leader, await follower
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert queued(admin) == [first.id, third.id]


async def test_enqueue_many_goes_in_chunks_in_order(client: Client, admin: redis.Redis) -> None:
    n = 2 * ENQUEUE_CHUNK + 7
    before = evalsha_calls(admin)
    jobs = await client.enqueue_many([TaskSpec("test_echo", {"i": i}) for i in range(n)])
    # three chunks, and the queue's registration (once per process and queue)
    assert evalsha_calls(admin) - before == 3 + 1
    assert queued(admin) == [job.id for job in jobs]
    assert int(admin.hget(f"{PREFIX}:{{default}}:stats", "enqueued") or 0) == n


async def test_killed_connection_and_flushed_scripts_are_recovered(
    client: Client, admin: redis.Redis
) -> None:
    first = await client.enqueue("test_echo", {"n": 1})
    admin.client_kill_filter(_type="normal", skipme=True)  # every client connection but ours
    second = await client.enqueue("test_echo", {"n": 2})
    admin.script_flush()
    third, fourth = await asyncio.gather(
        client.enqueue("test_echo", {"n": 3}), client.enqueue("test_echo", {"n": 4})
    )
    assert not any(job.duplicate for job in (first, second, third, fourth))
    assert queued(admin) == [first.id, second.id, third.id, fourth.id]


async def test_a_batch_error_reaches_every_caller_of_that_batch(
    installed_test_plugin: None, tmp_path: Path
) -> None:
    srv = RedisServer(tmp_path, appendonly=False)
    srv.start()
    broker = Broker(
        create_redis(srv.url, socket_timeout=0.5, connect_timeout=0.5, retries=0),
        BrokerConfig(prefix=PREFIX),
    )
    try:
        async with Client(broker, build_registry(only=[TEST_PLUGIN])) as wq:
            await wq.enqueue("test_echo", {})
            srv.kill()
            results = await asyncio.gather(
                *(wq.enqueue("test_echo", {"i": i}) for i in range(5)), return_exceptions=True
            )
            assert all(isinstance(r, redis.RedisError) for r in results), results
            srv.start()
            job = await wq.enqueue("test_echo", {"back": True})  # a new connection
            assert job.status == "queued"
    finally:
        srv.close()


async def test_a_silent_redis_times_out_and_the_channel_recovers(
    installed_test_plugin: None, tmp_path: Path
) -> None:
    srv = RedisServer(tmp_path, appendonly=False)
    srv.start()
    broker = Broker(
        create_redis(srv.url, socket_timeout=0.3, connect_timeout=0.5, retries=1),
        BrokerConfig(prefix=PREFIX),
    )
    try:
        async with Client(broker, build_registry(only=[TEST_PLUGIN])) as wq:
            await wq.enqueue("test_echo", {})
            assert srv.pid is not None
            os.kill(srv.pid, signal.SIGSTOP)  # accepts bytes, answers nothing
            try:
                started = time.monotonic()
                with pytest.raises(redis.TimeoutError):
                    await wq.enqueue("test_echo", {"lost": True})
                # two attempts of 0.3 s plus backoff; generous for a loaded machine
                assert time.monotonic() - started < 5
            finally:
                os.kill(srv.pid, signal.SIGCONT)
            job = await wq.enqueue("test_echo", {"after": True})
            assert job.status == "queued" and not job.duplicate
    finally:
        srv.close()
