"""Regression tests of issue 10's worker defects (each failed on the main branch before the
Engine 2 worker; see docs/worker.md).

- defect 1: a run tracked by job id only (a superseded run removed the live one);
- defect 2: plain ``def`` handlers past their timeout (new jobs queued behind hung threads);
- defect 3: reserve replay only worked for the first queue;
- defect 6: housekeeping rode on reserve (a saturated worker never recovered a lower queue).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from worker_waits import ledger_lines as ledger
from worker_waits import wait_for, wait_ledger
from wq_testkit import REDIS_URL, TEST_PLUGIN, WorkerProcs

from workqueue.client import Client

pytestmark = pytest.mark.slow


async def lose_the_lease(client: Client, queue: str, job_id: str) -> None:
    """What Redis looks like once the lease of a running job expired and was recovered (as
    when the worker's link was down longer than the lease): the job is queued again with
    ``lost`` + 1 and no token, and an idle worker is woken. Done by hand, in one MULTI, so
    the test does not depend on who recovers expired leases or when."""
    k = client.broker.keys(queue)
    async with client.broker.redis.pipeline(transaction=True) as pipe:
        pipe.zrem(k.active, job_id)
        pipe.hincrby(k.job(job_id), "lost", 1)
        pipe.hset(k.job(job_id), mapping={"status": "queued", "token": ""})
        pipe.lpush(k.queued, job_id)
        pipe.hincrby(k.stats, "lost_leases", 1)
        pipe.rpush(k.notify, "1")
        await pipe.execute()


# -- defect 1 ---------------------------------------------------------------------------------


async def test_a_superseded_run_does_not_remove_the_live_run_of_the_same_job(
    client: Client, workers: WorkerProcs, tmp_path: Path
) -> None:
    # Given a worker running attempt 1 (T1) of a job, with a 3 s lease (renewed every 1 s)
    path = tmp_path / "ledger"
    workers.start(
        "--concurrency",
        "4",
        "--idle-wait-seconds",
        "0.5",
        lease=3.0,
        env={"WORKQUEUE_MAX_LOST_LEASES": "3"},
    )
    job = await client.enqueue(
        "test_attempt_sleep", {"ledger": str(path), "sleeps": [2.0, 8.0]}, retries=0
    )
    await wait_ledger(path, 1)
    # When T1's lease is lost while T1 goes on, and the same worker leases the job again (T2)
    await lose_the_lease(client, "default", job.id)
    info = await wait_for(client, job.id, {"completed", "failed"}, timeout=30)
    # Then T2 keeps its lease and completes the job: once, not "worker lost N times"
    assert info.status == "completed", info
    assert info.attempts == 2 and info.lost_leases == 1, info
    stats = await client.broker.queue_stats("default")
    assert stats["done"] == 1 and stats.get("failed", 0) == 0
    lines = ledger(path)
    starts = [line for line in lines if line["event"] == "start"]
    assert [line["attempt"] for line in starts] == [1, 2], lines
    # T2 ran to its end; at most T1 (the superseded run) did not
    ends = [line["attempt"] for line in lines if line["event"] == "end"]
    assert 2 in ends and ends.count(2) == 1, lines
    assert starts[1]["token"] is None or starts[1]["token"] > starts[0]["token"]
    log = workers.log_file(0).read_text()
    assert "worker lost" not in log


# -- defect 2 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["single", "supervised"])
async def test_jobs_do_not_queue_behind_hung_threads(
    client: Client, workers: WorkerProcs, tmp_path: Path, mode: str
) -> None:
    # Given 2 plain-def jobs that hang past their 1 s timeout, then 4 quick ones
    path = tmp_path / "ledger"
    hung = [
        await client.enqueue(
            "test_hang", {"seconds": 15, "ledger": str(path)}, retries=0, timeout=1
        )
        for _ in range(2)
    ]
    quick = [
        await client.enqueue("test_sync_add", {"a": 1, "b": n}, retries=0, timeout=1)
        for n in range(4)
    ]
    # When a worker with 2 slots runs them (supervised: 2 such processes)
    extra = ["--processes", "2"] if mode == "supervised" else []
    workers.start("--concurrency", "2", *extra, lease=5.0)
    # Then the hung ones fail "timed out", and the quick ones run (none fails unrun)
    for job in hung:
        info = await wait_for(client, job.id, {"failed"}, timeout=20)
        assert info.error == "timed out after 1s", info
    for n, job in enumerate(quick):
        info = await wait_for(client, job.id, {"completed", "failed"}, timeout=30)
        assert info.status == "completed" and info.result == 1 + n, info
        assert info.attempts == 1
    # and the process with hung threads is recycled (re-executed, or restarted by the
    # supervisor at once: not as a crash, with no growing delay)
    needle = "recycled itself; restarting" if mode == "supervised" else "recycling this process"
    deadline = time.monotonic() + 10
    while needle not in (log := workers.log_file(0).read_text()):
        assert time.monotonic() < deadline, log
        await asyncio.sleep(0.1)
    assert "exited with" not in log


# -- defect 3 ---------------------------------------------------------------------------------


class LoseOneReserveReply:
    """The worker's broker, except that the first reserve on ``queue`` that leases jobs loses
    its reply after the script ran (as a connection cut mid-reply does)."""

    def __init__(self, inner: Any, queue: str) -> None:
        self.inner = inner
        self.queue = queue
        self.lost_once = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def reserve(self, *args: Any, **kwargs: Any) -> Any:
        result = await self.inner.reserve(*args, **kwargs)
        first = args[0]
        queue = first if isinstance(first, str) else first[0][0]
        jobs = result.jobs if hasattr(result, "jobs") else result[0].jobs
        if queue == self.queue and jobs and not self.lost_once:
            self.lost_once = True
            raise RedisConnectionError("reply lost (test)")
        return result


async def test_a_lost_reserve_reply_on_the_second_queue_is_replayed(
    client: Client, key_prefix: str
) -> None:
    from workqueue.broker import BrokerConfig
    from workqueue.registry import build_registry
    from workqueue.settings import WorkerSettings
    from workqueue.worker import Worker

    settings = WorkerSettings(
        redis_url=REDIS_URL,
        queues=("q1", "q2"),
        concurrency=10,
        lease_seconds=6.0,
        idle_wait_seconds=0.3,
        broker=BrokerConfig(prefix=key_prefix),
    )
    worker = Worker(settings, build_registry(only=[TEST_PLUGIN]))
    wrapper = LoseOneReserveReply(worker.broker, "q2")
    worker.broker = wrapper  # type: ignore[assignment]
    run = asyncio.create_task(worker.run())
    try:
        jobs = [await client.enqueue("test_echo", {"n": n}, queue="q2") for n in range(3)]
        started = time.monotonic()
        for job in jobs:
            info = await wait_for(client, job.id, {"completed"}, timeout=12)
            assert info.attempts == 1 and info.lost_leases == 0, info
        # promptly: not after the 6 s lease the jobs leased to nobody would have waited out
        assert time.monotonic() - started < 3.0
        assert wrapper.lost_once
        stats = await client.broker.queue_stats("q2")
        assert stats.get("lost_leases", 0) == 0 and stats["done"] == 3
    finally:
        worker.request_stop()
        await asyncio.wait_for(run, 15)


# -- defect 6 ---------------------------------------------------------------------------------


async def test_a_saturated_worker_still_housekeeps_its_lower_queue(
    client: Client, workers: WorkerProcs
) -> None:
    # Given a job of queue B leased by a worker that then dies (its lease expires in 1 s)
    dead = workers.start("--queue", "B", lease=1.0)
    b_job = await client.enqueue("test_sleep", {"seconds": 60}, queue="B")
    await wait_for(client, b_job.id, {"active"})
    os.kill(dead.pid, signal.SIGKILL)
    dead.wait(timeout=10)
    # and a worker saturated by queue A, consuming A then B in strict order
    for _ in range(4):
        await client.enqueue("test_sleep", {"seconds": 60}, queue="A")
    workers.start("--queue", "A", "--queue", "B", "--concurrency", "2", lease=1.0)
    scheduled = await client.enqueue("test_echo", {}, queue="B", delay=1.0)
    # Then within a few seconds B's expired lease is recovered and its due job promoted,
    # although the worker never has a free slot for B
    deadline = time.monotonic() + 8.0
    while True:
        lost = await client.get_job(b_job.id)
        due = await client.get_job(scheduled.id)
        if lost.status == "queued" and due.status == "queued":
            break
        assert time.monotonic() < deadline, (lost, due)
        await asyncio.sleep(0.1)
    assert lost.lost_leases == 1
    a_stats = await client.broker.queue_stats("A")
    assert a_stats["active"] == 2  # still saturated by A
