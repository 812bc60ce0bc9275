"""The integration essentials on every Redis topology: one shared Redis, a Redis Cluster (3
masters with one replica each: tests/cluster_stack.py) and a Sentinel-managed primary with a
replica and three Sentinels (tests/sentinel_stack.py).

Each test runs once per stack (the ``stack`` fixture's params): enqueue, batch enqueue, a worker
subprocess running jobs, retries, delayed jobs, idempotency, SIGKILL recovery, a long job whose
lease is renewed, graceful stop, ``/metrics``, the CLI, ``Client`` and ``SyncClient``. The queues
are chosen so that, on the cluster, their slots are on three different masters, and one worker
consumes all of them (its reserve, renew, finish, housekeeping and blocking waits then span
every master).

To add a stack: put a factory in :data:`STACKS` (``tmp_path -> object with .url and .close()``)
and its name in :data:`PARAMS`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
import redis
from cluster_stack import cluster_tools_present, queue_slot, start_cluster_stack
from redis_server import free_port
from worker_waits import ledger_lines, wait_for, wait_ledger
from wq_testkit import REDIS_URL, TEST_PLUGIN, WorkerProcs

from workqueue import SyncClient, TaskSpec
from workqueue.broker import Broker, BrokerConfig
from workqueue.broker.connection import create_redis
from workqueue.client import Client
from workqueue.errors import IdempotencyConflict
from workqueue.job import NewJob
from workqueue.registry import build_registry

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("installed_test_plugin")]


class RunningStack(Protocol):
    """What a stack factory returns."""

    @property
    def url(self) -> str: ...

    def close(self) -> None: ...


@dataclass
class _SharedRedis:
    """The suite's shared Redis (each test has its own key prefix; nothing to stop)."""

    url: str = REDIS_URL

    def close(self) -> None:
        pass


def _cluster(tmp: Path) -> RunningStack:
    if not cluster_tools_present():
        pytest.skip("not run here: redis-server/redis-cli are not installed")
    return start_cluster_stack(tmp)


def _sentinel(tmp: Path) -> RunningStack:
    from sentinel_stack import start_sentinel_stack  # tests/sentinel_stack.py (H2)

    stack: RunningStack = start_sentinel_stack(tmp)
    return stack


#: stack name -> factory(temp dir) -> a running stack (started once per session)
STACKS: dict[str, Callable[[Path], RunningStack]] = {
    "single": lambda tmp: _SharedRedis(),
    "cluster": _cluster,
    "sentinel": _sentinel,
}
#: the stacks every test here runs on
PARAMS = ["single", "cluster", "sentinel"]

#: candidate queue names; on a cluster, the first three whose slots are on three masters are used
_CANDIDATES = [f"q{n}" for n in range(64)]


@dataclass
class Stack:
    """One test's view of a stack: its URL, its own key prefix and its queues."""

    name: str
    url: str
    prefix: str
    queues: list[str]
    running: RunningStack

    def masters_of_queues(self) -> set[int]:
        """The ports of the masters holding the queues (cluster only)."""
        cluster: Any = self.running
        return {cluster.master_of_slot(queue_slot(q)).port for q in self.queues}


@pytest.fixture(scope="module")
def _stacks() -> Iterator[dict[str, RunningStack]]:
    """The stacks started for this module (each on first use), stopped after its last test."""
    running: dict[str, RunningStack] = {}
    yield running
    for started in running.values():
        started.close()


def _spread_queues(name: str, running: RunningStack) -> list[str]:
    if name != "cluster":
        return ["alpha", "beta", "gamma"]
    cluster: Any = running
    picked: dict[int, str] = {}
    for queue in _CANDIDATES:
        port = cluster.master_of_slot(queue_slot(queue)).port
        picked.setdefault(port, queue)
        if len(picked) == 3:
            break
    return sorted(picked.values())


@pytest.fixture(params=PARAMS)
def stack(
    request: pytest.FixtureRequest,
    _stacks: dict[str, RunningStack],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """A stack (started on first use, shared by the module), a fresh prefix, three queues."""
    name: str = request.param
    running = _stacks.get(name)
    if running is None:
        running = _stacks[name] = STACKS[name](tmp_path_factory.mktemp(f"stack-{name}"))
    prefix = f"wqtest-{uuid.uuid4().hex[:10]}"
    yield Stack(name, running.url, prefix, _spread_queues(name, running), running)
    if name == "single":
        conn = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(conn.scan_iter(match=f"{prefix}:*", count=1000))
            if keys:
                conn.delete(*keys)
        finally:
            conn.close()


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[Client]:
    broker = Broker(create_redis(stack.url), BrokerConfig(prefix=stack.prefix))
    c = Client(broker, build_registry(only=[TEST_PLUGIN]))
    yield c
    await c.aclose()


@pytest.fixture
def workers(stack: Stack, tmp_path: Path) -> Iterator[WorkerProcs]:
    procs = WorkerProcs(stack.prefix, tmp_path, url=stack.url)
    yield procs
    procs.stop_all()
    # no Redis error on any topology (a CROSSSLOT, MOVED or NOSCRIPT would be logged here)
    for index in range(len(procs.procs)):
        log = procs.log_file(index)
        text = log.read_text() if log.exists() else ""
        for needle in ("redis unavailable", "CROSSSLOT", "MOVED", "NOSCRIPT", "Traceback"):
            assert needle not in text, text[-2000:]


def _all_queues(stack: Stack) -> tuple[str, ...]:
    return ("--queue", ",".join(stack.queues))


def wq(stack: Stack, *args: str) -> str:
    """``python -m workqueue ARGS`` against the stack; its stdout (exit status 0 asserted)."""
    env = {
        **os.environ,
        "WORKQUEUE_PLUGINS": TEST_PLUGIN,
        "WORKQUEUE_KEY_PREFIX": stack.prefix,
        "WORKQUEUE_REDIS_URL": stack.url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "workqueue", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done.stdout


# -- the tests ----------------------------------------------------------------------------------


async def test_queues_spread_over_the_masters(stack: Stack, client: Client) -> None:
    """On the cluster the three queues live on three masters (what the other tests rely on)."""
    if stack.name == "cluster":
        assert len(stack.masters_of_queues()) == 3
    assert len(set(stack.queues)) == 3
    await client.broker.ping()


async def test_enqueue_batch_and_run_on_every_queue(
    stack: Stack, client: Client, workers: WorkerProcs
) -> None:
    # Given one job per queue and a batch spread over all queues (one call per queue, in
    # one write: on a cluster one pipelined batch per master)
    singles = [await client.enqueue("test_echo", {"q": q}, queue=q) for q in stack.queues]
    batch = await client.enqueue_many(
        [
            ("test_sync_add", {"a": i, "b": 1}) if i % 2 else ("test_echo", {"i": i})
            for i in range(30)
        ]
    )
    spread = await client.enqueue_many(
        [TaskSpec("test_echo", {"i": i}, queue=stack.queues[i % 3]) for i in range(60)]
    )
    assert len({j.id for j in [*singles, *batch, *spread]}) == 93
    figures = await client.broker.figures()
    assert sum(row.queued for row in figures.queues) == 93
    # When one worker consumes every queue
    workers.start(*_all_queues(stack), "--queue", "default")
    for job in [*singles, *batch, *spread]:
        info = await wait_for(client, job.id, {"completed"})
        assert info.attempts == 1
    assert (await client.get_job(singles[0].id)).result == {"q": stack.queues[0]}
    # Then the counters are exact per queue and summed system-wide
    for q in stack.queues:
        assert (await client.broker.queue_stats(q))["done"] == 21
    assert (await client.broker.queue_stats("default"))["done"] == 30
    figures = await client.broker.figures()
    assert sum(row.counters.get("done", 0) for row in figures.queues) == 93
    assert sum(row.queued + row.running for row in figures.queues) == 0


async def test_retry_and_delay(stack: Stack, client: Client, workers: WorkerProcs) -> None:
    workers.start(*_all_queues(stack))
    log = workers.log_file(0)
    for _ in range(300):
        if log.exists() and "worker started" in log.read_text():
            break
        await asyncio.sleep(0.1)
    failing = await client.enqueue("test_fail", {}, retries=2, queue=stack.queues[0])
    delayed = await client.enqueue("test_echo", {}, delay=1.5, queue=stack.queues[1])
    assert delayed.status == "scheduled"
    info = await wait_for(client, failing.id, {"failed"})
    assert info.attempts == 3 and info.failures == 3
    stats = await client.broker.queue_stats(stack.queues[0])
    assert stats["failed"] == 1 and stats["failed_attempts"] == 3 and stats["retried"] == 2
    late = await wait_for(client, delayed.id, {"completed"})
    assert late.started_at is not None and late.enqueued_at is not None
    assert (late.started_at - late.enqueued_at).total_seconds() >= 1.5


async def test_idempotency_key(stack: Stack, client: Client) -> None:
    for q in stack.queues:
        a = await client.enqueue("test_echo", {"x": 1}, idempotency_key="order-7", queue=q)
        b = await client.enqueue("test_echo", {"x": 1}, idempotency_key="order-7", queue=q)
        assert a.id == b.id and b.duplicate and not a.duplicate
        with pytest.raises(IdempotencyConflict):
            await client.enqueue("test_echo", {"x": 2}, idempotency_key="order-7", queue=q)
        assert (await client.broker.queue_stats(q))["queued"] == 1


async def test_sigkill_recovery(
    stack: Stack, client: Client, workers: WorkerProcs, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    a = workers.start(*_all_queues(stack), lease=2.0)
    job = await client.enqueue(
        "test_record", {"ledger": str(ledger), "sleep": 1.0}, queue=stack.queues[2]
    )
    await wait_ledger(ledger, 1)
    os.kill(a.pid, signal.SIGKILL)
    workers.start(*_all_queues(stack), lease=2.0)
    info = await wait_for(client, job.id, {"completed"}, timeout=30)
    assert info.attempts == 2 and info.lost_leases == 1
    lines = ledger_lines(ledger)
    assert len(lines) == 2 and lines[0]["pid"] == a.pid and lines[1]["pid"] != a.pid
    stats = await client.broker.queue_stats(stack.queues[2])
    assert stats["done"] == 1 and stats["lost_leases"] == 1


async def test_long_jobs_on_every_master_keep_their_leases(
    stack: Stack, client: Client, workers: WorkerProcs, tmp_path: Path
) -> None:
    # Given a lease of 1 s and jobs of 3.5 s on every queue (one renew per queue, every
    # renewal: on a cluster they go to three masters)
    ledger = tmp_path / "ledger"
    workers.start(*_all_queues(stack), "--concurrency", "4", lease=1.0)
    jobs = [
        await client.enqueue("test_record", {"ledger": str(ledger), "sleep": 3.5}, queue=q)
        for q in stack.queues
    ]
    for job in jobs:
        info = await wait_for(client, job.id, {"completed"}, timeout=30)
        # Then each ran once: its lease was renewed, never lost
        assert info.attempts == 1 and info.lost_leases == 0
    assert len(ledger_lines(ledger)) == 3


async def test_graceful_stop(
    stack: Stack, client: Client, workers: WorkerProcs, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    w = workers.start(*_all_queues(stack), "--grace-seconds", "10")
    jobs = [
        await client.enqueue("test_record", {"ledger": str(ledger), "sleep": 0.5}, queue=q)
        for q in stack.queues
    ]
    await wait_ledger(ledger, 3)
    w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=15) == 0
    for job in jobs:
        assert (await client.get_job(job.id)).status == "completed"
    late = await client.enqueue("test_echo", {}, queue=stack.queues[0])
    await asyncio.sleep(0.3)
    assert (await client.get_job(late.id)).status == "queued"


async def _metrics(port: int) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient() as http:
        while True:
            try:
                body: dict[str, Any] = (
                    await http.get(f"http://127.0.0.1:{port}/api/metrics")
                ).json()
                return body
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "metrics server never came up"
                await asyncio.sleep(0.1)


async def test_metrics_sum_every_queue(stack: Stack, client: Client, workers: WorkerProcs) -> None:
    port = free_port()
    workers.start(*_all_queues(stack), env={"WORKQUEUE_METRICS_PORT": str(port)})
    for i, q in enumerate(stack.queues):
        for _ in range(i + 1):
            await client.enqueue("test_echo", {}, queue=q)
    await client.enqueue("test_permanent", {}, queue=stack.queues[0])
    await client.enqueue("test_echo", {}, delay=60, queue=stack.queues[1])
    for _ in range(300):
        body = await _metrics(port)
        if body["jobs_done"] == 6 and body["jobs_failed"] == 1:
            break
        await asyncio.sleep(0.05)
    assert body["jobs_done"] == 6 and body["jobs_failed"] == 1
    assert body["scheduled"] == 1 and body["total_jobs_in_queue"] == 0
    for i, q in enumerate(stack.queues):
        assert body["queues"][q]["jobs_done"] == i + 1
    assert body["types"]["test_echo"]["done"] == 6


async def test_cli_commands(stack: Stack, client: Client, workers: WorkerProcs) -> None:
    # enqueue through the CLI onto every queue, list the queues, then run and inspect
    ids = []
    for q in stack.queues:
        out = wq(stack, "enqueue", "test_echo", "--payload", '{"n": 1}', "--queue", q)
        ids.append(out.split()[0])
    views = json.loads(wq(stack, "queues", "list", "--json"))
    assert {v["queue"]: v["queued"] for v in views} == dict.fromkeys(stack.queues, 1)
    shown = json.loads(wq(stack, "queues", "show", stack.queues[1], "--json"))
    assert shown["queued"] == 1
    wq(stack, "queues", "set", stack.queues[2], "--completed-ttl", "60")
    listed = wq(stack, "jobs", "list", "--status", "queued", "--json")
    assert {row["id"] for row in json.loads(listed)} == set(ids)
    workers.start(*_all_queues(stack))
    for job_id in ids:
        await wait_for(client, job_id, {"completed"})
    assert json.loads(wq(stack, "jobs", "show", ids[2], "--json"))["status"] == "completed"
    failed = wq(stack, "enqueue", "test_permanent", "--queue", stack.queues[0]).split()[0]
    await wait_for(client, failed, {"failed"})
    wq(stack, "jobs", "retry", failed)
    for _ in range(300):
        info = await client.get_job(failed)
        if info.status == "failed" and info.attempts == 2:
            break
        await asyncio.sleep(0.05)
    assert info.status == "failed" and info.attempts == 2  # requeued, ran and failed again
    stats = json.loads(wq(stack, "stats", "--json"))
    assert stats["jobs_done"] == 3 and stats["jobs_failed"] == 2
    assert {q: stats["queues"][q]["jobs_done"] for q in stack.queues} == dict.fromkeys(
        stack.queues, 1
    )
    purged = wq(stack, "jobs", "purge", "--status", "completed", "--yes")
    assert "removed 3 completed jobs" in purged
    assert json.loads(wq(stack, "jobs", "list", "--status", "completed", "--json")) == []


def test_sync_client(stack: Stack) -> None:
    sync = SyncClient.from_url(
        stack.url,
        registry=build_registry(only=[TEST_PLUGIN]),
        config=BrokerConfig(prefix=stack.prefix),
    )
    try:
        jobs = [sync.enqueue("test_sync_add", {"a": 1, "b": 2}, queue=q) for q in stack.queues]
        for job, q in zip(jobs, stack.queues, strict=True):
            info = sync.get_job(job.id)
            assert info.queue == q and info.status == "queued"
        many = sync.enqueue_many([("test_echo", {"i": i}) for i in range(5)])
        assert len({j.id for j in many}) == 5
    finally:
        sync.close()


async def test_wait_for_work_wakes_on_any_master(stack: Stack, client: Client) -> None:
    # One BLPOP per queue on a cluster (each on its queue's master), all at once: a token on
    # any queue ends the wait, and a wait left pending by the last one is reused
    broker = client.broker
    assert await broker.wait_for_work(stack.queues, 0.2) is False
    for q in [*stack.queues, *reversed(stack.queues)]:
        waiter = asyncio.ensure_future(broker.wait_for_work(stack.queues, 20))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        await client.enqueue("test_echo", {}, queue=q)
        assert await asyncio.wait_for(waiter, 10) is True
    # the tokens were taken: a short wait times out again
    assert await broker.wait_for_work(stack.queues, 0.2) is False


async def test_url_names_the_topology(stack: Stack) -> None:
    from redis.asyncio import RedisCluster

    client = create_redis(stack.url)
    try:
        assert isinstance(client, RedisCluster) == (stack.name == "cluster")
        assert await client.ping()
    finally:
        await client.aclose()
    if stack.name == "cluster":
        # every node's URL works, a replica's too; ?cluster=yes skips the question
        cluster: Any = stack.running
        for node in cluster.nodes:
            for url in (node.url, node.url + "/0?cluster=yes"):
                broker = Broker(create_redis(url), BrokerConfig(prefix=stack.prefix))
                try:
                    assert isinstance(broker.redis, RedisCluster)
                    (result,) = await broker.enqueue(
                        [NewJob(uuid.uuid4().hex, "test_echo", stack.queues[0], b"{}", 0, 5.0)]
                    )
                    assert result.status == "queued"
                finally:
                    await broker.aclose()
        assert (await _stats(stack, stack.queues[0]))["queued"] == 12


async def _stats(stack: Stack, queue: str) -> dict[str, int]:
    broker = Broker(create_redis(stack.url), BrokerConfig(prefix=stack.prefix))
    try:
        return await broker.queue_stats(queue)
    finally:
        await broker.aclose()


def test_producer_over_http(stack: Stack, tmp_path: Path) -> None:
    from test_producer import start_producer

    producer = start_producer(tmp_path, stack.prefix, {"WORKQUEUE_REDIS_URL": stack.url})
    try:
        with producer.http() as http:
            assert http.get("/ready").json() == {"status": "ready"}
            one = http.post("/enqueue", json={"type": "test_echo", "queue": stack.queues[0]})
            assert one.status_code == 202, one.text
            tasks = [{"type": "test_echo", "queue": q, "payload": {"q": q}} for q in stack.queues]
            batch = http.post("/enqueue/batch", json=tasks * 5)
            assert batch.status_code == 202, batch.text
            ids = [one.json()["id"], *(job["id"] for job in batch.json())]
            assert len(set(ids)) == 16
            for job_id in ids:
                shown = http.get(f"/jobs/{job_id}")
                assert shown.status_code == 200 and shown.json()["status"] == "queued"
    finally:
        producer.stop()


async def test_durable_enqueue_waits_for_each_master_replica(stack: Stack) -> None:
    # On the cluster every master has one replica: WAIT 1 on each master's channel answers 1.
    # The shared single Redis has no replica: the write is refused as not durable.
    from workqueue.errors import DurabilityError

    config = BrokerConfig(prefix=stack.prefix, durable_enqueue=1, durable_timeout_s=0.5)
    broker = Broker(create_redis(stack.url), config)
    try:
        jobs = [
            NewJob(uuid.uuid4().hex, "test_echo", stack.queues[i % 3], b"{}", 0, 5.0)
            for i in range(30)
        ]
        if stack.name == "single":
            with pytest.raises(DurabilityError) as refused:
                await broker.enqueue(jobs)
            assert refused.value.acked == 0
            return
        results = await broker.enqueue(jobs)
        assert [r.status for r in results] == ["queued"] * 30
        again = await broker.enqueue(jobs)  # a repeat: the same jobs, acknowledged again
        assert all(r.duplicate for r in again)
        for q in stack.queues:
            assert (await broker.queue_stats(q))["queued"] == 10
    finally:
        await broker.aclose()


async def test_progress_and_cancel_of_running_jobs_on_every_master(
    stack: Stack, client: Client, workers: WorkerProcs, tmp_path: Path
) -> None:
    # Given one running job per queue reporting progress (renew and progress calls of the
    # three queues go to three masters on the cluster)
    from workqueue.broker.contract import CancelOutcome

    workers.start(*_all_queues(stack), "--concurrency", "4", lease=3.0)
    jobs = [
        await client.enqueue(
            "test_progress_loop", {"ledger": str(tmp_path / f"{q}.jsonl"), "seconds": 60}, queue=q
        )
        for q in stack.queues
    ]
    deadline = time.monotonic() + 20
    for job in jobs:
        while True:
            info = await client.get_job(job.id)
            if isinstance(info.progress, dict) and info.progress.get("step", 0) > 1:
                break
            assert time.monotonic() < deadline, info
            await asyncio.sleep(0.1)
    # When each is cancelled, then each ends cancelled (learned through its renewal)
    for job in jobs:
        assert (await client.cancel(job.id)).outcome == CancelOutcome.CANCELLING
    for job in jobs:
        info = await wait_for(client, job.id, {"cancelled", "failed", "completed"})
        assert info.status == "cancelled" and info.attempts == 1, info
    figures = await client.broker.figures()
    assert sum(row.counters.get("cancelled", 0) for row in figures.queues) == 3
