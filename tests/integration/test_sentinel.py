"""WorkQueue through Redis Sentinel (``redis+sentinel://``), and across failovers.

One stack per module (tests/sentinel_stack.py): a primary, a replica and three Sentinels.
- the Broker, the Client and its blocking wait work through the Sentinel URL;
- ``SENTINEL FAILOVER`` (the old primary lives on, demoted): the same Broker's enqueue channel,
  ordinary commands and blocking wait reach the new primary without a new client;
- the primary is SIGKILLed under a producer and a worker subprocess: the SAME processes keep
  accepting and running jobs once the Sentinels have promoted the replica.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.exceptions
from redis_server import free_port
from sentinel_stack import SentinelStack, StackTls, start_sentinel_stack
from wq_testkit import TEST_PLUGIN

from workqueue.broker import Broker, BrokerConfig
from workqueue.broker.connection import create_redis, setup_problem
from workqueue.broker.contract import FinishOp, OpKind
from workqueue.broker.sentinel import SentinelPool
from workqueue.client import Client
from workqueue.registry import build_registry

sys.path.insert(0, str(Path(__file__).parents[1] / "faults"))
from infra_support import make_tls_files
from services import Services, read_ledger

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelStack]:
    made = start_sentinel_stack(tmp_path_factory.mktemp("sentinel"))
    yield made
    made.close()


@pytest.fixture
async def broker(stack: SentinelStack, key_prefix: str) -> AsyncIterator[Broker]:
    b = Broker(create_redis(stack.url), BrokerConfig(prefix=key_prefix))
    yield b
    await b.aclose()


def _channel_port(broker: Broker) -> int | None:
    conn = broker._channel._conn if broker._channel is not None else None
    return int(conn.port) if conn is not None and conn.is_connected else None


async def _woken_by_enqueue(waiter: Broker, writer: Client, queue: str) -> bool:
    """A blocking wait on ``queue`` that an enqueue by another client wakes (True)."""
    await waiter.queue_stats(queue)  # connect before waiting
    wait = asyncio.create_task(waiter.wait_for_work([queue], 8.0))
    await asyncio.sleep(0.3)
    await writer.enqueue("test_echo", {}, queue=queue)
    return await wait


async def test_broker_and_client_work_through_sentinel(
    installed_test_plugin: None, stack: SentinelStack, broker: Broker, key_prefix: str
) -> None:
    client = Client(broker, build_registry(only=[TEST_PLUGIN]))
    job = await client.enqueue("test_echo", {"n": 1}, queue="s1")
    many = await client.enqueue_many([("test_echo", {"n": i}) for i in range(3)])
    assert len(many) == 3
    reserved = await broker.reserve("s1", 10, lease_ms=5000, worker_id="w", request_id="r1")
    assert [j.id for j in reserved.jobs] == [job.id]
    done = await broker.finish({"s1": [FinishOp(OpKind.ACK, job.id, reserved.jobs[0].token, "1")]})
    assert [a.value for a in done["s1"]] == ["completed"]
    with stack.current_primary().client() as primary:  # the data is on the primary
        assert primary.exists(f"{key_prefix}:{{s1}}:job:{job.id}")
    other = Broker(create_redis(stack.url), BrokerConfig(prefix=key_prefix))
    try:
        assert await _woken_by_enqueue(other, client, "s2")
        assert other._blocking is not None
        assert isinstance(other._blocking.connection_pool, SentinelPool)
    finally:
        await other.aclose()


async def test_a_forced_failover_is_followed_by_the_same_clients(
    installed_test_plugin: None, stack: SentinelStack, broker: Broker, key_prefix: str
) -> None:
    registry = build_registry(only=[TEST_PLUGIN])
    client = Client(broker, registry)
    waiter = Broker(create_redis(stack.url), BrokerConfig(prefix=key_prefix))
    try:
        await client.enqueue("test_echo", {}, queue="f1")
        assert await _woken_by_enqueue(waiter, client, "f2")  # the blocking link is up
        old = stack.current_primary()
        assert _channel_port(broker) == old.port
        stack.failover()
        stack.wait_for_failover(old)
        new = stack.current_primary()
        # the same clients keep writing: the enqueue channel reconnects to the new primary
        answered = None
        deadline = time.monotonic() + 20
        while answered is None:
            try:
                answered = await client.enqueue("test_echo", {"after": True}, queue="f1")
            except Exception:
                assert time.monotonic() < deadline, "never reached the new primary"
                await asyncio.sleep(0.2)
        assert _channel_port(broker) == new.port
        with new.client() as conn:
            assert conn.exists(f"{key_prefix}:{{f1}}:job:{answered.id}")
        assert (await broker.queue_stats("f1"))["queued"] >= 1
        # the blocking wait of the same broker object reaches the new primary too
        woken = False
        deadline = time.monotonic() + 20
        while not woken:
            try:
                woken = await _woken_by_enqueue(waiter, client, "f2")
            except Exception:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
        assert waiter._blocking is not None
        conn = waiter._blocking.connection_pool._available_connections  # type: ignore[attr-defined]
        assert {c.port for c in conn} == {new.port}
    finally:
        await waiter.aclose()
    stack.wait_for_replica_link(old)


def _status(producer_url: str, job_id: str) -> str:
    return str(httpx.get(f"{producer_url}/jobs/{job_id}", timeout=5).json().get("status"))


def test_producer_and_worker_processes_survive_a_killed_primary(
    installed_test_plugin: None,
    stack: SentinelStack,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    services = Services(tmp_path, key_prefix)
    try:
        _run_through_a_kill(stack, services, tmp_path)
    finally:
        services.stop_all()


def _run_through_a_kill(stack: SentinelStack, services: Services, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    producer = services.producer(stack.url)
    worker = services.worker(stack.url, "--concurrency", "4", lease=3.0, metrics_port=free_port())

    def enqueue(n: int) -> list[str]:
        ids = []
        for i in range(n):
            body = {"type": "test_record", "payload": {"ledger": str(ledger), "n": i}}
            deadline = time.monotonic() + 30
            while True:  # a 503 during the switch is the documented answer: retry
                answer = httpx.post(f"{producer.url}/enqueue", json=body, timeout=10)
                if answer.status_code == 202:
                    break
                assert answer.status_code == 503, answer.text
                assert time.monotonic() < deadline, answer.text
                time.sleep(0.2)
            ids.append(answer.json()["id"])
        return ids

    def wait_completed(ids: list[str]) -> None:
        deadline = time.monotonic() + 60
        while not all(_status(producer.url, i) == "completed" for i in ids):
            assert worker.alive(), worker.log()[-3000:]
            assert time.monotonic() < deadline, worker.log()[-3000:]
            time.sleep(0.2)

    before = enqueue(5)
    wait_completed(before)
    time.sleep(1.0)  # the worker idles in its blocking wait
    killed = stack.kill_primary()
    stack.wait_for_failover(killed)
    after = enqueue(5)  # the same producer process
    wait_completed(after)  # the same worker process
    assert producer.alive() and worker.alive()
    assert worker.log_file.read_text().count("worker started") == 1
    runs = read_ledger(ledger)
    assert set(before + after) <= set(runs)
    assert worker.url is not None  # the metrics read the new primary (system-wide figures)
    metrics = httpx.get(f"{worker.url}/metrics", timeout=5).json()
    assert metrics["jobs_done"] >= len(before + after), metrics
    stack.restart(killed)  # back as a replica of the new primary, for the next tests


def test_the_cli_works_through_sentinel(stack: SentinelStack, key_prefix: str) -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "workqueue", "queues", "list", "--redis-url", stack.url],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **__import__("os").environ,
            "WORKQUEUE_KEY_PREFIX": key_prefix,
            "WORKQUEUE_PLUGINS": TEST_PLUGIN,
        },
        check=False,
    )
    assert done.returncode == 0, done.stderr


async def test_tls_and_logins_for_the_data_nodes_and_the_sentinels(
    installed_test_plugin: None, tmp_path: Path, key_prefix: str
) -> None:
    """``rediss+sentinel://``: the Sentinels and the data nodes speak TLS only, the data nodes
    want a password (the URL's) and the Sentinels one of their own (``sentinel_password``).
    The certificate is verified: without the private CA the client is refused."""
    files = make_tls_files(tmp_path / "tls", "localhost", "127.0.0.1")
    stack = start_sentinel_stack(
        tmp_path,
        password="data-secret",
        sentinel_password="watch-secret",
        tls=StackTls(files.ca, files.cert, files.key),
    )
    try:
        assert stack.url.startswith("rediss+sentinel://:data-secret@")
        broker = Broker(create_redis(stack.url), BrokerConfig(prefix=key_prefix))
        client = Client(broker, build_registry(only=[TEST_PLUGIN]))
        try:
            job = await client.enqueue("test_echo", {"tls": True}, queue="t1")
            assert (await broker.get_job(job.id)).status == "queued"
            assert await _woken_by_enqueue(broker, client, "t2")
        finally:
            await client.aclose()
        for bad_url, problem in (
            # the Sentinels refuse the login: said so (workers log it as a set-up problem)
            (stack.url.replace("watch-secret", "wrong"), "Redis refused the login"),
            # no CA: the certificate is not trusted
            (
                stack.url.split("?")[0] + "?sentinel_password=watch-secret",
                "the TLS handshake with Redis failed",
            ),
        ):
            refused = create_redis(bad_url, retries=0, connect_timeout=1)
            try:
                with pytest.raises(redis.exceptions.ConnectionError) as caught:
                    await refused.ping()
                assert (setup_problem(caught.value) or "").startswith(problem), str(caught.value)
                assert "secret" not in str(caught.value)
            finally:
                await refused.aclose()
    finally:
        stack.close()
