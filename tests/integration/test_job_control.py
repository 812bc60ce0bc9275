"""Cancel, progress and attempt history (SPEC 11) against real Redis and real workers.

Broker-level tests drive the scripts directly (every state a cancel can meet, the fenced
progress write, the history of retries and a lost lease); worker tests run ``workqueue
worker`` subprocesses (a running async handler cancelled, a plain ``def`` seeing
``ctx.cancelled``, a worker SIGSTOPped while its job's cancel is pending, a worker SIGKILLed
mid-job); the HTTP and CLI tests run the producer and the ``workqueue`` command.
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
from pathlib import Path
from typing import Any

import pytest
import redis
from worker_waits import ledger_lines, wait_for, wait_ledger
from wq_testkit import REDIS_URL, TEST_PLUGIN, WorkerProcs

from workqueue.broker import Broker
from workqueue.broker.contract import (
    Applied,
    CancelOutcome,
    FinishOp,
    Lease,
    OpKind,
    RecoveredOutcome,
)
from workqueue.client import Client
from workqueue.errors import JobNotFound
from workqueue.job import NewJob
from workqueue.worker.metrics import render_prometheus, summarize


def new_job(queue: str = "q", **kwargs: Any) -> NewJob:
    fields: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "type": "t",
        "queue": queue,
        "payload": b"{}",
        "retries": 3,
        "timeout": 30.0,
        **kwargs,
    }
    return NewJob(**fields)


async def reserve_one(broker: Broker, worker: str, lease_ms: int = 60_000) -> Any:
    res = await broker.reserve(
        "q", 1, lease_ms=lease_ms, worker_id=worker, request_id=uuid.uuid4().hex
    )
    assert len(res.jobs) == 1, res
    return res.jobs[0]


async def housekeep(broker: Broker) -> list[RecoveredOutcome]:
    step = await broker.housekeep("q", worker_id="hk", duty_ms=5000)
    assert step.held
    return [r.outcome for r in step.recovered]


def stats(broker: Broker, key_prefix: str) -> dict[str, int]:
    conn = redis.Redis.from_url(REDIS_URL)
    try:
        raw = conn.hgetall(f"{key_prefix}:{{q}}:stats")
    finally:
        conn.close()
    return {k.decode(): int(v) for k, v in raw.items()}


# -- cancel, broker level -----------------------------------------------------------------------


@pytest.mark.parametrize("state", ["queued", "scheduled", "retrying"])
async def test_a_waiting_job_is_cancelled_at_once(
    broker: Broker, key_prefix: str, state: str
) -> None:
    # Given a job in each waiting state
    job = new_job(delay_ms=60_000 if state == "scheduled" else -1)
    await broker.enqueue([job])
    if state == "retrying":
        held = await reserve_one(broker, "w1")
        op = FinishOp(OpKind.FAIL, job.id, held.token, "boom", 60_000)
        assert await broker.finish({"q": [op]}) == {"q": [Applied.RETRYING]}
    assert (await broker.get_job(job.id)).status == state
    # When it is cancelled
    done = await broker.cancel(job.id)
    # Then it is cancelled now: final, out of its index, counted as cancelled and not failed
    assert done.outcome == CancelOutcome.CANCELLED
    assert done.job.status == "cancelled" and done.job.finished_at is not None
    info = await broker.get_job(job.id)
    assert info.status == "cancelled"
    figures = (await broker.queue_figures(["q"])).queues[0]
    assert (figures.queued, figures.scheduled, figures.retrying) == (0, 0, 0)
    counters = stats(broker, key_prefix)
    assert counters["cancelled"] == 1 and counters.get("failed", 0) == 0
    assert [j.id for j in await broker.list_jobs("cancelled", "q")] == [job.id]
    assert await broker.list_jobs("failed", "q") == []
    # ... and nothing runs it any more; a second cancel finds it finished
    assert (await broker.reserve("q", 5, lease_ms=1000, worker_id="w2", request_id="r")).jobs == []
    again = await broker.cancel(job.id)
    assert again.outcome == CancelOutcome.FINISHED and again.job.status == "cancelled"
    if state == "retrying":  # the failed attempt stays in the history
        assert [a.outcome for a in info.history] == ["failed"]


async def test_finished_and_unknown_jobs(broker: Broker) -> None:
    # Given a completed job and a failed one
    done, failed = new_job(), new_job(retries=0)
    await broker.enqueue([done, failed])
    for job, op in ((done, OpKind.ACK), (failed, OpKind.FAIL)):
        held = await reserve_one(broker, "w1")
        assert held.id == job.id
        await broker.finish({"q": [FinishOp(op, job.id, held.token, b"1", -1)]})
    # Then cancelling them changes nothing, and an unknown id is not found
    for job, status in ((done, "completed"), (failed, "failed")):
        result = await broker.cancel(job.id)
        assert result.outcome == CancelOutcome.FINISHED
        assert (await broker.get_job(job.id)).status == status
    with pytest.raises(JobNotFound):
        await broker.cancel("no-such-job")


async def test_a_running_job_is_asked_and_ends_cancelled_never_retried(
    broker: Broker, key_prefix: str
) -> None:
    # Given a running job with retries left
    job = new_job(retries=5)
    await broker.enqueue([job])
    held = await reserve_one(broker, "w1")
    lease = Lease(job.id, held.token)
    assert (await broker.renew({"q": [lease]}, lease_ms=60_000)).cancel == {}
    # When it is cancelled: it is asked to stop, and still active
    asked = await broker.cancel(job.id)
    assert asked.outcome == CancelOutcome.CANCELLING and asked.job.status == "active"
    assert (await broker.cancel(job.id)).outcome == CancelOutcome.CANCELLING  # a repeat
    # Then the next renewal tells its worker, and its failing attempt is not retried
    renewed = await broker.renew({"q": [lease]}, lease_ms=60_000)
    assert renewed.cancel == {"q": [lease]} and renewed.lost == {}
    op = FinishOp(OpKind.FAIL, job.id, held.token, "CancelledError", 1000)
    assert await broker.finish({"q": [op]}) == {"q": [Applied.CANCELLED]}
    info = await broker.get_job(job.id)
    assert info.status == "cancelled" and info.failures == 0
    assert [(a.attempt, a.worker, a.outcome) for a in info.history] == [(1, "w1", "cancelled")]
    counters = stats(broker, key_prefix)
    assert counters["cancelled"] == 1 and counters.get("failed", 0) == 0
    assert counters.get("retried", 0) == 0
    # ... and a repeat of the op answers the same
    assert await broker.finish({"q": [op]}) == {"q": [Applied.CANCELLED]}


@pytest.mark.parametrize("op", [OpKind.CANCEL, OpKind.RELEASE])
async def test_cancel_and_release_ops_of_a_cancelled_run(broker: Broker, op: OpKind) -> None:
    # Given a running job asked to cancel
    job = new_job()
    await broker.enqueue([job])
    held = await reserve_one(broker, "w1")
    await broker.cancel(job.id)
    # When its worker stops the run (cancel) or hands it back (a graceful stop)
    applied = await broker.finish({"q": [FinishOp(op, job.id, held.token)]})
    # Then it ends cancelled, never requeued
    assert applied == {"q": [Applied.CANCELLED]}
    assert (await broker.get_job(job.id)).status == "cancelled"
    assert (await broker.queue_figures(["q"])).queues[0].queued == 0


async def test_an_ack_completes_a_job_whose_cancel_came_too_late(broker: Broker) -> None:
    job = new_job()
    await broker.enqueue([job])
    held = await reserve_one(broker, "w1")
    await broker.cancel(job.id)
    applied = await broker.finish({"q": [FinishOp(OpKind.ACK, job.id, held.token, b'"ok"')]})
    assert applied == {"q": [Applied.COMPLETED]}
    assert (await broker.get_job(job.id)).status == "completed"


async def test_a_lease_expiring_with_a_cancel_pending_ends_cancelled(broker: Broker) -> None:
    # Given a running job asked to cancel whose worker went silent (its lease expires)
    job = new_job()
    await broker.enqueue([job])
    held = await reserve_one(broker, "w1", lease_ms=200)
    await broker.cancel(job.id)
    await asyncio.sleep(0.3)
    # When housekeeping recovers the lease, the job ends cancelled: not requeued, not lost
    assert await housekeep(broker) == [RecoveredOutcome.CANCELLED]
    info = await broker.get_job(job.id)
    assert info.status == "cancelled" and info.lost_leases == 0
    assert [a.outcome for a in info.history] == ["cancelled"]
    assert (await broker.reserve("q", 1, lease_ms=1000, worker_id="w2", request_id="r")).jobs == []
    # ... and the late report of the silent worker is refused
    late = await broker.finish({"q": [FinishOp(OpKind.ACK, job.id, held.token, b"1")]})
    assert late == {"q": [Applied.STALE]}


async def test_cancelled_records_follow_the_failed_retention(broker: Broker) -> None:
    # Given a queue keeping failed (and so cancelled) records 0.2 s
    await broker.set_queue_settings("q", failed_ttl_s=0.2)
    job = new_job(idempotency_key=f"k-{uuid.uuid4().hex}")
    await broker.enqueue([job])
    await broker.cancel(job.id)
    assert (await broker.get_job(job.id)).status == "cancelled"
    # When the retention has passed, housekeeping trims it
    await asyncio.sleep(0.3)
    step = await broker.housekeep("q", worker_id="hk", duty_ms=5000)
    assert step.trimmed == 1
    with pytest.raises(JobNotFound):
        await broker.get_job(job.id)
    # ... and with retention 0 a cancelled record is not kept at all, yet the answer shows it
    await broker.set_queue_settings("q", failed_ttl_s=0)
    other = new_job()
    await broker.enqueue([other])
    done = await broker.cancel(other.id)
    assert done.job.status == "cancelled"
    with pytest.raises(JobNotFound):
        await broker.get_job(other.id)


# -- progress and history, broker level ----------------------------------------------------------


async def test_progress_is_fenced_by_the_lease(broker: Broker) -> None:
    # Given a job leased to w1 (token T1)
    job = new_job()
    await broker.enqueue([job])
    first = await reserve_one(broker, "w1", lease_ms=200)
    t1 = Lease(job.id, first.token)
    assert await broker.set_progress({"q": [(t1, "0.5")]}) == []
    assert (await broker.get_job(job.id)).progress == 0.5
    # When its lease expires and w2 runs it (token T2)
    await asyncio.sleep(0.3)
    assert await housekeep(broker) == [RecoveredOutcome.REQUEUED]
    second = await reserve_one(broker, "w2")
    t2 = Lease(job.id, second.token)
    # Then the superseded attempt's progress is refused, the live one's written
    assert await broker.set_progress({"q": [(t1, '{"stale": true}'), (t2, '{"done": 3}')]}) == [
        job.id
    ]
    assert (await broker.get_job(job.id)).progress == {"done": 3}
    assert await broker.set_progress({"q": [(t1, "9")]}) == [job.id]
    assert (await broker.get_job(job.id)).progress == {"done": 3}


async def test_history_after_retries_timeouts_and_a_lost_lease(broker: Broker) -> None:
    # Given a job that fails, times out, is lost, and then succeeds, on four workers
    job = new_job(retries=5)
    await broker.enqueue([job])
    a = await reserve_one(broker, "wa")
    op = FinishOp(OpKind.FAIL, job.id, a.token, "ValueError: boom", 0)
    assert await broker.finish({"q": [op]}) == {"q": [Applied.RETRYING]}
    await asyncio.sleep(0.01)
    b = await reserve_one(broker, "wb")
    op = FinishOp(OpKind.FAIL, job.id, b.token, "timed out after 1s", 0, timed_out=True)
    assert await broker.finish({"q": [op]}) == {"q": [Applied.RETRYING]}
    await asyncio.sleep(0.01)
    await reserve_one(broker, "wc", lease_ms=100)
    running = await broker.get_job(job.id)
    await asyncio.sleep(0.2)
    assert await housekeep(broker) == [RecoveredOutcome.REQUEUED]
    d = await reserve_one(broker, "wd")
    op = FinishOp(OpKind.ACK, job.id, d.token, b'"ok"')
    assert await broker.finish({"q": [op]}) == {"q": [Applied.COMPLETED]}
    # Then the history tells each attempt: where, how it ended, and why
    info = await broker.get_job(job.id)
    rows = [(h.attempt, h.worker, h.outcome) for h in info.history]
    assert rows == [
        (1, "wa", "failed"),
        (2, "wb", "timed_out"),
        (3, "wc", "lost"),
        (4, "wd", "succeeded"),
    ]
    assert info.history[0].error == "ValueError: boom"
    assert info.history[3].error is None and info.history[3].finished_at == info.finished_at
    assert all(h.started_at and h.finished_at for h in info.history)
    # ... and while an attempt runs it shows as running
    assert [h.outcome for h in running.history] == ["failed", "timed_out", "running"]
    assert running.history[-1].finished_at is None
    shown = info.to_dict()["history"]
    assert shown[0]["started_at"].endswith("Z") and shown[0]["outcome"] == "failed"


async def test_history_keeps_the_last_25_attempts(broker: Broker) -> None:
    job = new_job(retries=40)
    await broker.enqueue([job])
    for n in range(30):
        held = await reserve_one(broker, f"w{n}")
        op = FinishOp(OpKind.FAIL, job.id, held.token, f"fail {n + 1}", 0)
        await broker.finish({"q": [op]})
        await asyncio.sleep(0.002)
    info = await broker.get_job(job.id)
    assert [h.attempt for h in info.history] == list(range(6, 31))


# -- workers -----------------------------------------------------------------------------------


async def test_a_running_async_handler_is_cancelled(
    client: Client, workers: WorkerProcs, tmp_path: Path, key_prefix: str
) -> None:
    # Given an async handler running (reporting progress in a tight loop), lease 3 s
    ledger = tmp_path / "ledger.jsonl"
    workers.start(lease=3.0)
    job = await client.enqueue("test_progress_loop", {"ledger": str(ledger), "seconds": 60})
    await wait_ledger(ledger, 1)
    # ... its progress shows while it runs
    deadline = time.monotonic() + 10
    while True:
        info = await client.get_job(job.id)
        if isinstance(info.progress, dict) and info.progress.get("step", 0) > 1:
            break
        assert time.monotonic() < deadline, info
        await asyncio.sleep(0.1)
    assert info.status == "active" and info.history[-1].outcome == "running"
    # When it is cancelled
    asked_at = time.monotonic()
    result = await client.cancel(job.id)
    assert result.outcome == CancelOutcome.CANCELLING
    # Then the handler is cancelled and the job ends cancelled, not retried
    info = await wait_for(client, job.id, {"cancelled", "failed", "completed"})
    took = time.monotonic() - asked_at
    assert info.status == "cancelled", info
    lines = await wait_ledger(ledger, 2)
    assert [line["event"] for line in lines] == ["start", "cancelled"]
    assert [h.outcome for h in info.history] == ["cancelled"]
    assert info.attempts == 1 and info.progress["step"] > 1
    figures = summarize(await client.broker.figures())
    assert figures["jobs_cancelled"] == 1 and figures["jobs_failed"] == 0
    assert figures["queues"]["default"]["jobs_cancelled"] == 1
    print(f"async handler cancelled {took:.2f} s after the request (lease 3 s)")


async def test_the_last_progress_value_is_kept_after_the_outcome(
    client: Client, workers: WorkerProcs, tmp_path: Path
) -> None:
    # Given a handler reporting progress in a tight loop for 1 s, then returning its last step
    ledger = tmp_path / "ledger.jsonl"
    workers.start(lease=3.0)
    job = await client.enqueue("test_progress_loop", {"ledger": str(ledger), "seconds": 1})
    info = await wait_for(client, job.id, {"completed", "failed"})
    # Then the record keeps the last value reported (sent just before the outcome)
    assert info.status == "completed", info
    assert info.progress == {"step": info.result["steps"]} and info.result["steps"] > 10
    assert [(h.attempt, h.outcome) for h in info.history] == [(1, "succeeded")]


async def test_a_running_def_handler_sees_ctx_cancelled(
    client: Client, workers: WorkerProcs, tmp_path: Path
) -> None:
    # Given a plain def handler working in steps
    ledger = tmp_path / "ledger.jsonl"
    workers.start(lease=3.0)
    job = await client.enqueue("test_poll_cancel", {"ledger": str(ledger), "seconds": 60})
    await wait_ledger(ledger, 1)
    # When it is cancelled
    assert (await client.cancel(job.id)).outcome == CancelOutcome.CANCELLING
    # Then it sees ctx.cancelled and the job ends cancelled
    info = await wait_for(client, job.id, {"cancelled", "failed", "completed"})
    assert info.status == "cancelled", info
    lines = await wait_ledger(ledger, 2)
    assert [line["event"] for line in lines] == ["start", "cancelled"]
    assert isinstance(info.progress, int) and info.progress >= 1


async def test_a_cut_off_worker_with_a_pending_cancel_ends_cancelled(
    client: Client, workers: WorkerProcs, tmp_path: Path
) -> None:
    # Given worker A running a job (lease 2 s)
    ledger = tmp_path / "ledger.jsonl"
    a = workers.start(lease=2.0)
    job = await client.enqueue("test_progress_loop", {"ledger": str(ledger), "seconds": 60})
    await wait_ledger(ledger, 1)
    # When A is cut off (SIGSTOP) and the job is cancelled while no renewal can tell A
    os.killpg(a.pid, signal.SIGSTOP)
    try:
        assert (await client.cancel(job.id)).outcome == CancelOutcome.CANCELLING
        # ... and worker B housekeeps the queue
        workers.start(lease=2.0)
        info = await wait_for(client, job.id, {"cancelled", "queued", "active", "failed"})
        deadline = time.monotonic() + 20
        while info.status == "active" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            info = await client.get_job(job.id)
    finally:
        os.killpg(a.pid, signal.SIGCONT)
    # Then after its lease expired the job ended cancelled: never requeued nor run again
    assert info.status == "cancelled", info
    await asyncio.sleep(1.0)  # A wakes up: its late report is refused
    info = await client.get_job(job.id)
    assert info.status == "cancelled" and info.attempts == 1
    assert len([x for x in ledger_lines(ledger) if x["event"] == "start"]) == 1
    assert [h.outcome for h in info.history] == ["cancelled"]
    assert f"-{a.pid}-" in info.history[0].worker


async def test_history_after_a_sigkill_shows_lost_then_succeeded(
    client: Client, workers: WorkerProcs, tmp_path: Path
) -> None:
    # Given worker A running attempt 1 (which would sleep 60 s)
    ledger = tmp_path / "ledger.jsonl"
    a = workers.start(lease=2.0)
    job = await client.enqueue("test_attempt_sleep", {"ledger": str(ledger), "sleeps": [60, 0]})
    await wait_ledger(ledger, 1)
    # When A is SIGKILLed and worker B runs attempt 2
    os.killpg(a.pid, signal.SIGKILL)
    b = workers.start(lease=2.0)
    info = await wait_for(client, job.id, {"completed"}, timeout=30)
    # Then the history names both workers and what happened on each
    rows = [(h.attempt, h.outcome) for h in info.history]
    assert rows == [(1, "lost"), (2, "succeeded")], info.history
    assert f"-{a.pid}-" in info.history[0].worker and f"-{b.pid}-" in info.history[1].worker
    assert info.history[0].error and "lease expired" in info.history[0].error


# -- HTTP, CLI, metrics --------------------------------------------------------------------------


def _cli(prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "WORKQUEUE_PLUGINS": TEST_PLUGIN,
        "WORKQUEUE_KEY_PREFIX": prefix,
        "WORKQUEUE_REDIS_URL": REDIS_URL,
    }
    return subprocess.run(
        [sys.executable, "-m", "workqueue", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_http_cancel_route(
    installed_test_plugin: None, broker: Broker, key_prefix: str, tmp_path: Path
) -> None:
    from test_producer import start_producer

    producer = start_producer(tmp_path, key_prefix)
    try:
        with producer.http() as http:
            # a queued job: 200 with the job, cancelled
            posted = http.post("/enqueue", json={"type": "test_echo", "payload": {}})
            job_id = posted.json()["id"]
            answer = http.post(f"/jobs/{job_id}/cancel")
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["status"] == "cancelled" and body["history"] == []
            assert "progress" in body and body["finished_at"].endswith("Z")
            # then a finished one: 409; an unknown one: 404 (under /api/ too)
            again = http.post(f"/api/jobs/{job_id}/cancel")
            assert again.status_code == 409 and again.json()["error"] == "job_finished"
            assert http.post("/api/jobs/nope/cancel").status_code == 404
            assert http.get(f"/jobs/{job_id}").json()["status"] == "cancelled"
            # a running one: 202, still active
            posted = http.post("/enqueue", json={"type": "test_echo", "payload": {}})
            running = posted.json()["id"]
            res = await broker.reserve(
                "default", 1, lease_ms=60_000, worker_id="w1", request_id="r1"
            )
            assert [j.id for j in res.jobs] == [running]
            answer = http.post(f"/jobs/{running}/cancel")
            assert answer.status_code == 202 and answer.json()["status"] == "active"
            shown = http.get(f"/jobs/{running}").json()
            assert shown["history"][0]["outcome"] == "running"
            assert shown["history"][0]["worker"] == "w1"
            paths = http.get("/schema/openapi.json").json()["paths"]
            assert "/jobs/{job_id}/cancel" in paths and "/api/jobs/{job_id}/cancel" in paths
    finally:
        producer.stop()


async def test_cli_cancel_and_show(
    installed_test_plugin: None, broker: Broker, key_prefix: str
) -> None:
    job = new_job(queue="default", type="test_echo")
    await broker.enqueue([job])
    done = _cli(key_prefix, "jobs", "cancel", job.id, "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["outcome"] == "cancelled" and answer["job"]["status"] == "cancelled"
    again = _cli(key_prefix, "jobs", "cancel", job.id)
    assert again.returncode == 1 and "has finished" in again.stderr
    missing = _cli(key_prefix, "jobs", "cancel", "nope")
    assert missing.returncode == 1 and "no job" in missing.stderr
    shown = _cli(key_prefix, "jobs", "show", job.id, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["history"] == []
    listed = _cli(key_prefix, "jobs", "list", "--status", "cancelled", "--json")
    assert [j["id"] for j in json.loads(listed.stdout)] == [job.id]
    purged = _cli(key_prefix, "jobs", "purge", "--status", "cancelled", "--yes")
    assert purged.returncode == 0 and "removed 1 cancelled job" in purged.stdout, purged.stderr
    with pytest.raises(JobNotFound):
        await broker.get_job(job.id)
    # a job with attempts: the table shows them
    other = new_job(queue="default", type="test_echo")
    await broker.enqueue([other])
    await broker.reserve("default", 1, lease_ms=60_000, worker_id="w-cli", request_id="r")
    table = _cli(key_prefix, "jobs", "show", other.id)
    assert table.returncode == 0 and "attempts" in table.stdout and "w-cli" in table.stdout


async def test_metrics_count_cancelled_never_failed(broker: Broker) -> None:
    job = new_job()
    await broker.enqueue([job])
    await broker.cancel(job.id)
    figures = summarize(await broker.figures(["q"]))
    assert figures["jobs_cancelled"] == 1 and figures["jobs_failed"] == 0
    figures["worker"] = {"uptime_seconds": 1, "running": 0, "succeeded": 0}
    from workqueue.worker.metrics import RunTimeHistogram

    text = render_prometheus(figures, RunTimeHistogram())
    assert 'workqueue_jobs_cancelled_total{queue="q"} 1' in text
    assert 'workqueue_jobs_failed_total{queue="q"} 0' in text
