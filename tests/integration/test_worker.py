"""The worker as a real subprocess against the real Redis: outcomes, crashes, leases, stops."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from worker_waits import ledger_lines, log_text, wait_for, wait_ledger
from wq_testkit import WorkerProcs

from workqueue.client import Client

pytestmark = pytest.mark.slow


async def test_jobs_run_through_the_installed_plugin(client: Client, workers: WorkerProcs) -> None:
    workers.start()
    echo = await client.enqueue("test_echo", {"hello": "world"})
    add = await client.enqueue("test_sync_add", {"a": 2, "b": 3})
    assert (await wait_for(client, echo.id, {"completed"})).result == {"hello": "world"}
    info = await wait_for(client, add.id, {"completed"})
    assert info.result == 5 and info.attempts == 1
    stats = await client.broker.queue_stats("default")
    assert stats["done"] == 2 and stats["done|test_echo"] == 1
    log = await log_text(workers.log_file(0), "succeeded in", 2)
    assert f"job={echo.id}" in log and "succeeded in" in log and "type=test_echo" in log
    assert "world" not in log  # payload values never reach the log


async def test_retries_make_exactly_one_plus_retries_attempts(
    client: Client, workers: WorkerProcs
) -> None:
    workers.start()
    job = await client.enqueue("test_fail", {}, retries=2)
    info = await wait_for(client, job.id, {"failed"})
    assert info.attempts == 3 and info.failures == 3
    assert "ValueError: test_fail always fails (attempt 3)" in (info.error or "")
    stats = await client.broker.queue_stats("default")
    assert stats["failed"] == 1 and stats["failed_attempts"] == 3 and stats["retried"] == 2
    log = await log_text(workers.log_file(0), "failed for good")
    assert log.count("retry scheduled") == 2 and log.count("failed for good") == 1


async def test_permanent_error_is_not_retried(client: Client, workers: WorkerProcs) -> None:
    workers.start()
    job = await client.enqueue("test_permanent", {}, retries=5)
    info = await wait_for(client, job.id, {"failed"})
    assert info.attempts == 1 and "PermanentError" in (info.error or "")


async def test_timeout_cancels_the_attempt(client: Client, workers: WorkerProcs) -> None:
    workers.start()
    job = await client.enqueue("test_sleep", {"seconds": 30}, retries=0, timeout=0.5)
    info = await wait_for(client, job.id, {"failed"}, timeout=10)
    assert info.error == "timed out after 0.5s" and info.attempts == 1


async def test_invalid_job_record_fails_without_retry(client: Client, workers: WorkerProcs) -> None:
    # Given a tampered record written straight into Redis (not JSON: pickle bytes)
    job = await client.enqueue("test_echo", {}, retries=5, delay=0.5)
    key = client.broker.keys("default").job(job.id)
    await client.broker.redis.hset(key, "payload", b"\x80\x04\x95\x00cos\nsystem\n.")
    workers.start()
    info = await wait_for(client, job.id, {"failed"})
    assert info.attempts == 1 and info.error == "invalid job: payload is not valid JSON"
    # and the worker keeps running jobs
    ok = await client.enqueue("test_echo", {"n": 1})
    assert (await wait_for(client, ok.id, {"completed"})).result == {"n": 1}


async def test_delayed_job_runs_after_its_delay(client: Client, workers: WorkerProcs) -> None:
    workers.start()
    # Enqueue once the worker runs: a slow start on a loaded machine is not the delay's fault.
    log = workers.log_file(0)
    for _ in range(300):
        if log.exists() and "worker started" in log.read_text():
            break
        await asyncio.sleep(0.1)
    job = await client.enqueue("test_echo", {}, delay=1.5)
    assert job.status == "scheduled"
    info = await wait_for(client, job.id, {"completed"})
    assert info.started_at is not None and info.enqueued_at is not None
    waited = (info.started_at - info.enqueued_at).total_seconds()
    # Never early; late only by scheduling noise (the enqueue wakes an idle worker, which then
    # sleeps until the due time, not until its 5 s idle wait ends: that would show as ~5).
    assert 1.5 <= waited < 4.5


async def test_sigkill_mid_job_recovers_after_the_lease(
    client: Client, workers: WorkerProcs, tmp_path: Path
) -> None:
    # Given worker A running a job, with a 2 s lease
    ledger = tmp_path / "ledger"
    a = workers.start(lease=2.0)
    job = await client.enqueue("test_record", {"ledger": str(ledger), "sleep": 1.0})
    await wait_ledger(ledger, 1)
    # When A is SIGKILLed mid-job and worker B runs
    os.kill(a.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    workers.start(lease=2.0)
    info = await wait_for(client, job.id, {"completed"})
    recovery = time.monotonic() - killed_at
    # Then B completes it within lease + 2 s of the kill, and it is counted once
    assert recovery < 2.0 + 2.0 + 1.0  # + the 1 s the job itself takes
    assert info.attempts == 2 and info.lost_leases == 1
    lines = ledger_lines(ledger)
    assert len(lines) == 2 and lines[0]["pid"] == a.pid and lines[1]["pid"] != a.pid
    stats = await client.broker.queue_stats("default")
    assert stats["done"] == 1 and stats["lost_leases"] == 1


async def test_sigstop_past_the_lease_late_ack_is_refused(
    client: Client, workers: WorkerProcs, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    a = workers.start(lease=1.0)
    job = await client.enqueue("test_record", {"ledger": str(ledger), "sleep": 1.0})
    await wait_ledger(ledger, 1)
    os.kill(a.pid, signal.SIGSTOP)
    try:
        workers.start(lease=5.0)
        await wait_for(client, job.id, {"completed"}, timeout=15)
    finally:
        os.kill(a.pid, signal.SIGCONT)
    # A wakes up, finishes its copy, and its ack is refused by the fencing token
    deadline = time.monotonic() + 10
    while "stale lease" not in workers.log_file(0).read_text():
        assert time.monotonic() < deadline, "worker A never reported its refused ack"
        await asyncio.sleep(0.1)
    info = await client.get_job(job.id)
    stats = await client.broker.queue_stats("default")
    assert stats["done"] == 1 and info.status == "completed" and info.attempts == 2
    assert len(ledger_lines(ledger)) == 2


async def test_graceful_stop_finishes_running_jobs(
    client: Client, workers: WorkerProcs, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    w = workers.start("--grace-seconds", "10")
    jobs = [
        await client.enqueue("test_record", {"ledger": str(ledger), "sleep": 0.5}) for _ in range(5)
    ]
    await wait_ledger(ledger, 5)
    w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=10) == 0
    for job in jobs:
        assert (await client.get_job(job.id)).status == "completed"
    late = await client.enqueue("test_echo", {})
    await asyncio.sleep(0.3)
    assert (await client.get_job(late.id)).status == "queued"  # no fetch after the signal


async def test_graceful_stop_releases_unfinished_jobs_at_once(
    client: Client, workers: WorkerProcs, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    w = workers.start("--grace-seconds", "1", lease=30.0)
    job = await client.enqueue("test_record", {"ledger": str(ledger), "sleep": 60})
    await wait_ledger(ledger, 1)
    stopped_at = time.monotonic()
    w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=10) == 0
    # grace (1 s) plus process shutdown; far below the 30 s lease a crash would cost
    assert time.monotonic() - stopped_at < 1 + 5
    info = await client.get_job(job.id)
    assert info.status == "queued" and info.failures == 0  # back at once, not a failed attempt
    stats = await client.broker.queue_stats("default")
    assert stats.get("failed_attempts", 0) == 0 and stats["queued"] == 1


async def test_a_job_that_kills_its_worker_ends_failed(
    client: Client, workers: WorkerProcs
) -> None:
    # Given a supervisor that restarts its worker process each time the job kills it
    workers.start("--processes", "1", lease=1.0, env={"WORKQUEUE_MAX_LOST_LEASES": "3"})
    workers.start("--processes", "2", lease=1.0, env={"WORKQUEUE_MAX_LOST_LEASES": "3"})
    job = await client.enqueue("test_kill_self", {}, retries=10)
    info = await wait_for(client, job.id, {"failed"}, timeout=40)
    assert info.error is not None and "worker lost 3 times" in info.error
    assert info.attempts == 3 and info.lost_leases == 3
    ok = await client.enqueue("test_echo", {"still": "working"})
    assert (await wait_for(client, ok.id, {"completed"})).result == {"still": "working"}


async def test_idempotency_key(client: Client) -> None:
    a = await client.enqueue("test_echo", {"x": 1}, idempotency_key="order-7")
    b = await client.enqueue("test_echo", {"x": 1}, idempotency_key="order-7")
    assert a.id == b.id and b.duplicate and not a.duplicate
    from workqueue.errors import IdempotencyConflict

    with pytest.raises(IdempotencyConflict):
        await client.enqueue("test_echo", {"x": 2}, idempotency_key="order-7")
    assert (await client.broker.queue_stats("default"))["queued"] == 1


async def test_every_job_event_line_is_written_by_a_graceful_stop(
    client: Client, workers: WorkerProcs
) -> None:
    # Given a worker that ran 300 jobs (event lines reach the sinks in batches)
    w = workers.start()
    jobs = await client.enqueue_many([("test_echo", {"n": n}) for n in range(300)])
    for job in jobs:
        await wait_for(client, job.id, {"completed"})
    # When it is stopped right after the last one
    w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=20) == 0
    # Then each job has exactly one "started" line followed by one "succeeded" line
    lines = workers.log_file(0).read_text().splitlines()
    position: dict[tuple[str, str], int] = {}
    for index, line in enumerate(lines):
        fields = line.split(" | ")
        if len(fields) >= 8 and fields[4].startswith("job=") and fields[4] != "job=-":
            event = "started" if fields[7] == "started" else fields[7].split(" ")[0]
            key = (fields[4][4:], event)
            assert key not in position, f"two {event} lines for one job: {line}"
            position[key] = index
    for job in jobs:
        assert position[(job.id, "started")] < position[(job.id, "succeeded")]
