"""Durable enqueue (SPEC section 10): a 202 only after N replicas acknowledged the write.

A private primary with one replica (``--replicaof``). Given N=1 the producer answers 202;
given more replicas than there are (or a replica that sleeps through the wait) it answers 503
within the timeout, with Retry-After, and a retry with the same Idempotency-Key answers the
same job, never a second one. A repeat of an already-written job waits for the replicas too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from litestar.testing import AsyncTestClient
from redis_server import RedisServer
from wq_testkit import TEST_PLUGIN

from workqueue.broker import Broker, BrokerConfig
from workqueue.broker.connection import create_redis
from workqueue.client import Client
from workqueue.errors import ConfigurationError, DurabilityError
from workqueue.producer import ProducerSettings, create_app
from workqueue.registry import build_registry

TIMEOUT_S = 0.3


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, RedisServer]]:
    """A primary and its replica, in sync."""
    primary = RedisServer(tmp_path_factory.mktemp("primary"), appendonly=False)
    primary.start()
    replica = RedisServer(
        tmp_path_factory.mktemp("replica"),
        appendonly=False,
        extra_args=["--replicaof", "127.0.0.1", str(primary.port), "--enable-debug-command", "yes"],
    )
    replica.start()
    try:
        deadline = time.monotonic() + 20
        with replica.client() as conn:
            while conn.info("replication").get("master_link_status") != "up":
                assert time.monotonic() < deadline, "the replica never synced"
                time.sleep(0.05)
        yield primary, replica
    finally:
        replica.close()
        primary.close()


def _app(url: str, prefix: str, replicas: int) -> Any:
    config = BrokerConfig(prefix=prefix, durable_enqueue=replicas, durable_timeout_s=TIMEOUT_S)
    settings = ProducerSettings(redis_url=url, broker=config)
    return create_app(settings, build_registry(only=[TEST_PLUGIN]))


@pytest.fixture
async def durable_app(
    installed_test_plugin: None, pair: tuple[RedisServer, RedisServer], key_prefix: str
) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(_app(pair[0].url, key_prefix, 1)) as client:
        yield client


class SleepingReplica:
    """``DEBUG SLEEP`` on the replica in a thread: it acknowledges nothing meanwhile."""

    def __init__(self, replica: RedisServer, seconds: float) -> None:
        self.thread = threading.Thread(
            target=self._sleep, args=(replica, seconds), name="debug-sleep"
        )

    @staticmethod
    def _sleep(replica: RedisServer, seconds: float) -> None:
        with replica.client(socket_timeout=seconds + 10) as conn:
            conn.execute_command("DEBUG", "SLEEP", seconds)

    def __enter__(self) -> SleepingReplica:
        self.thread.start()
        time.sleep(0.1)  # the replica is asleep before the test writes
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join()


def _jobs_enqueued(server: RedisServer, prefix: str) -> int:
    with server.client() as conn:
        return int(conn.hget(f"{prefix}:{{default}}:stats", "enqueued") or 0)


async def test_a_202_once_the_replica_has_the_job(
    durable_app: AsyncTestClient[Any], pair: tuple[RedisServer, RedisServer], key_prefix: str
) -> None:
    answer = await durable_app.post("/enqueue", json={"type": "test_echo", "payload": {"n": 1}})
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    with pair[1].client() as replica:  # acknowledged by the replica: it has the record now
        assert replica.exists(f"{key_prefix}:{{default}}:job:{job_id}")
    batch = await durable_app.post("/enqueue/batch", json=[{"type": "test_echo"}] * 3)
    assert batch.status_code == 202, batch.text


async def test_503_when_the_replica_does_not_ack_and_a_retry_answers_the_same_job(
    durable_app: AsyncTestClient[Any], pair: tuple[RedisServer, RedisServer], key_prefix: str
) -> None:
    body = {"type": "test_echo", "payload": {"n": 2}}
    headers = {"Idempotency-Key": f"durable-{key_prefix}"}
    with SleepingReplica(pair[1], 1.5):
        started = time.monotonic()
        refused = await durable_app.post("/enqueue", json=body, headers=headers)
        took = time.monotonic() - started
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"] == "not_durable"
    assert "0 of the 1 replicas" in refused.json()["problem"]
    assert took < TIMEOUT_S + 1.0  # answered when the wait ran out, not at the request deadline
    # the replica is awake: the retry answers the job the first attempt wrote
    retry = await durable_app.post("/enqueue", json=body, headers=headers)
    assert retry.status_code == 200, retry.text  # 200: an existing job (a duplicate)
    again = await durable_app.post("/enqueue", json=body, headers=headers)
    assert again.json()["id"] == retry.json()["id"]
    assert _jobs_enqueued(pair[0], key_prefix) == 1  # one job, not two


async def test_a_repeat_of_a_written_job_waits_for_the_replica_too(
    durable_app: AsyncTestClient[Any], pair: tuple[RedisServer, RedisServer], key_prefix: str
) -> None:
    body = {"type": "test_echo", "payload": {"n": 3}}
    headers = {"Idempotency-Key": f"repeat-{key_prefix}"}
    first = await durable_app.post("/enqueue", json=body, headers=headers)
    assert first.status_code == 202, first.text
    with SleepingReplica(pair[1], 1.5):
        repeat = await durable_app.post("/enqueue", json=body, headers=headers)
    assert repeat.status_code == 503, repeat.text


async def test_more_replicas_than_exist_is_503_for_the_client_too(
    installed_test_plugin: None, pair: tuple[RedisServer, RedisServer], key_prefix: str
) -> None:
    config = BrokerConfig(prefix=key_prefix, durable_enqueue=2, durable_timeout_s=TIMEOUT_S)
    client = Client(Broker(create_redis(pair[0].url), config), build_registry(only=[TEST_PLUGIN]))
    try:
        with pytest.raises(DurabilityError) as caught:
            await client.enqueue("test_echo", {"n": 4}, idempotency_key="k4")
        assert caught.value.acked == 1
        assert caught.value.wanted == 2
        assert len(caught.value.job_ids) == 1
        with pytest.raises(DurabilityError):
            await client.enqueue_many([("test_echo", {"n": i}) for i in range(5)])
    finally:
        await client.aclose()
    app = _app(pair[0].url, key_prefix, 2)
    async with AsyncTestClient(app) as http:
        answer = await http.post(
            "/enqueue", json={"type": "test_echo"}, headers={"Idempotency-Key": "k4"}
        )
        assert answer.status_code == 503
        assert answer.json()["error"] == "not_durable"


async def test_no_replica_at_all_is_503(
    installed_test_plugin: None, tmp_path: Path, key_prefix: str
) -> None:
    alone = RedisServer(tmp_path, appendonly=False)
    alone.start()
    try:
        async with AsyncTestClient(_app(alone.url, key_prefix, 1)) as http:
            answer = await http.post("/enqueue", json={"type": "test_echo"})
        assert answer.status_code == 503, answer.text
        assert "0 of the 1 replicas" in answer.json()["problem"]
    finally:
        alone.close()


def test_a_wait_longer_than_the_socket_timeout_is_refused() -> None:
    config = BrokerConfig(durable_enqueue=1, durable_timeout_s=3.0)
    redis_client = create_redis("redis://127.0.0.1:1/0", socket_timeout=2.0)
    with pytest.raises(ConfigurationError, match="socket timeout"):
        Broker(redis_client, config)
    with pytest.raises(ConfigurationError):
        BrokerConfig(durable_enqueue=-1)


def test_the_replica_answers_wait_in_sync(pair: tuple[RedisServer, RedisServer]) -> None:
    """The fixture itself: WAIT on the primary sees the replica (a test that can fail)."""
    with pair[0].client() as conn:
        conn.set("probe", "1")
        assert conn.wait(1, 1000) == 1
    with pytest.raises(redis.ResponseError), pair[1].client() as replica:
        replica.set("probe", "2")


async def test_an_enqueue_on_a_read_only_replica_reconnects_then_answers_503(
    installed_test_plugin: None, pair: tuple[RedisServer, RedisServer], key_prefix: str
) -> None:
    """READONLY on the enqueue channel (its node was demoted) drops the connection and counts
    as a connection error: retried on a new connection (under Sentinel: to the new primary),
    and answered 503 when it persists (not 500)."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    config = BrokerConfig(prefix=key_prefix)
    broker = Broker(create_redis(pair[1].url, retries=1), config)
    broker._known_queues.add("default")  # straight to the enqueue script
    client = Client(broker, build_registry(only=[TEST_PLUGIN]))
    try:
        with pytest.raises(RedisConnectionError, match="replica"):
            await client.enqueue("test_echo", {})
    finally:
        await client.aclose()
    settings = ProducerSettings(redis_url=pair[1].url, broker=config)
    async with AsyncTestClient(create_app(settings, build_registry(only=[TEST_PLUGIN]))) as http:
        answer = await http.post("/enqueue", json={"type": "test_echo"})
    assert answer.status_code == 503, answer.text


def test_primary_answers_through_sentinel_urls() -> None:
    from workqueue.broker.sentinel import primary_answers

    assert primary_answers("redis+sentinel://127.0.0.1:1/mymaster", timeout=0.5) is False
