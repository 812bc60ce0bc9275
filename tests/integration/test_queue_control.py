"""Priorities, pause/resume, unique jobs and GET /queues (SPEC 11-12), end to end: real Redis,
real worker subprocesses, a real producer subprocess, enqueuers in several processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from test_producer import API_KEY, Producer, _delete_prefix, start_producer
from worker_waits import ledger_lines, wait_for, wait_ledger
from wq_testkit import REDIS_URL, WorkerProcs

from workqueue.broker import Broker, queue_control
from workqueue.client import Client

# An enqueuer process: N jobs of test_record in sequence, each with a priority from the seed;
# prints [[id, priority, seq], ...].
ENQUEUER = """
import asyncio, json, random, sys
from workqueue.broker import Broker, BrokerConfig
from workqueue.broker.connection import create_redis
from workqueue.client import Client

async def main(url, prefix, queue, ledger, n, seed):
    client = Client(Broker(create_redis(url), BrokerConfig(prefix=prefix)), check_types=False)
    rng = random.Random(seed)
    out = []
    for seq in range(n):
        prio = rng.randrange(10)
        job = await client.enqueue(
            "test_record", {"ledger": ledger, "p": seed, "seq": seq}, queue=queue, priority=prio
        )
        out.append([job.id, prio, seq])
    await client.aclose()
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]),
                 int(sys.argv[6])))
"""


def _admin() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


async def _settle(seconds: float) -> None:
    await asyncio.sleep(seconds)


# -- priorities ----------------------------------------------------------------------------------


async def test_priority_order_under_concurrent_enqueue_from_several_processes(
    client: Client, broker: Broker, workers: WorkerProcs, key_prefix: str, tmp_path: Path
) -> None:
    # Given a paused queue, and three processes enqueueing 40 jobs each at the same time, with
    # priorities 0-9
    ledger = tmp_path / "ledger.jsonl"
    await client.pause_queue("prio")
    script = tmp_path / "enqueuer.py"
    script.write_text(ENQUEUER)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), REDIS_URL, key_prefix, "prio", str(ledger), "40", str(s)],
            stdout=subprocess.PIPE,
        )
        for s in (1, 2, 3)
    ]
    jobs: dict[str, tuple[int, int, int]] = {}  # id -> (priority, process, seq)
    for s, proc in zip((1, 2, 3), procs, strict=True):
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        for job_id, prio, seq in json.loads(out):
            jobs[job_id] = (prio, s, seq)
    assert len(jobs) == 120
    overview = (await client.queues())[0]
    assert overview.depth["queued"] == 120 and overview.paused
    assert sum(overview.queued_by_priority.values()) == 120
    # When one worker that runs one job at a time starts, and the queue is resumed
    workers.start("-q", "prio", "-c", "1")
    await client.resume_queue("prio")
    lines = await wait_ledger(ledger, 120, timeout=60)
    # Then the jobs started highest priority first, and FIFO within one priority (the
    # order each process enqueued them in)
    started = [jobs[line["job_id"]] for line in lines]
    prios = [p for p, _, _ in started]
    assert prios == sorted(prios, reverse=True), prios
    for prio in range(10):
        for s in (1, 2, 3):
            seqs = [seq for p, proc, seq in started if p == prio and proc == s]
            assert seqs == sorted(seqs), (prio, s, seqs)


async def test_priority_survives_retry_promotion_and_requeue(
    broker: Broker, client: Client
) -> None:
    # Given a job of priority 7 that failed once (retrying) and one of priority 0 queued
    low = await client.enqueue("test_echo", {"n": 0}, queue="pq")
    high = await client.enqueue("test_echo", {"n": 7}, queue="pq", priority=7, delay=0.2)
    # When its due time passes
    await asyncio.sleep(0.3)
    # Then reserve promotes it into its own level and hands it out first
    res = await broker.reserve("pq", 1, lease_ms=100, worker_id="w", request_id="r1")
    assert [j.id for j in res.jobs] == [high.id]
    # And when its lease expires, housekeeping puts it back at the front of level 7
    await asyncio.sleep(0.2)
    step = await broker.housekeep("pq", worker_id="hk", duty_ms=5000)
    assert [r.job_id for r in step.recovered] == [high.id]
    res = await broker.reserve("pq", 2, lease_ms=60_000, worker_id="w", request_id="r2")
    assert [j.id for j in res.jobs] == [high.id, low.id]


async def test_housekeeping_puts_back_a_lost_level_marker(broker: Broker, client: Client) -> None:
    # Given a job of priority 3 whose level marker is lost (an inconsistent state)
    job = await client.enqueue("test_echo", {}, queue="lv", priority=3)
    k = broker.keys("lv")
    admin = _admin()
    assert admin.zrange(k.queued + ":levels", 0, -1) == [b"3"]
    admin.delete(k.queued + ":levels")
    res = await broker.reserve("lv", 1, lease_ms=60_000, worker_id="w", request_id="r1")
    assert res.jobs == []  # reserve does not look at a level it does not know of
    # When housekeeping runs, Then the level is known again and the job starts
    await broker.housekeep("lv", worker_id="hk", duty_ms=5000)
    res = await broker.reserve("lv", 1, lease_ms=60_000, worker_id="w", request_id="r2")
    assert [j.id for j in res.jobs] == [job.id]


@pytest.mark.parametrize("bad", [10, -1, True, "3", 2.5])
async def test_priority_is_validated(client: Client, bad: Any) -> None:
    from workqueue.errors import TaskValidationError

    with pytest.raises(TaskValidationError) as info:
        await client.enqueue("test_echo", {}, queue="v", priority=bad)
    assert info.value.field == "priority"


# -- pause / resume -------------------------------------------------------------------------------


async def test_a_paused_queue_starts_nothing_even_after_a_worker_restart(
    client: Client, workers: WorkerProcs, tmp_path: Path
) -> None:
    # Given a worker on a queue that is paused, and jobs enqueued to it
    ledger = tmp_path / "ledger.jsonl"
    worker = workers.start("-q", "pz", "--idle-wait-seconds", "0.5", lease=2.0)
    assert not (await client.pause_queue("pz")).depth["queued"]
    jobs = [
        await client.enqueue("test_record", {"ledger": str(ledger)}, queue="pz") for _ in range(5)
    ]
    # Then none starts while it is paused (the worker idles, it does not spin)
    await _settle(2.0)
    assert ledger_lines(ledger) == []
    # When the worker is killed and another starts (the pause lives in Redis)
    worker.kill()
    worker.wait(timeout=10)
    workers.start("-q", "pz", "--idle-wait-seconds", "0.5", lease=2.0)
    await _settle(2.0)
    # Then still none has started
    assert ledger_lines(ledger) == []
    row = (await client.queues())[0]
    assert row.paused and row.depth["queued"] == 5
    # When the queue is resumed, Then all of them run
    assert not (await client.resume_queue("pz")).paused
    for job in jobs:
        await wait_for(client, job.id, {"completed"}, timeout=30)
    assert len(ledger_lines(ledger)) == 5


async def test_running_jobs_finish_when_their_queue_is_paused(
    client: Client, workers: WorkerProcs, tmp_path: Path
) -> None:
    # Given a running job
    ledger = tmp_path / "ledger.jsonl"
    workers.start("-q", "pr", "-c", "1")
    first = await client.enqueue("test_record", {"ledger": str(ledger), "sleep": 1.0}, queue="pr")
    await wait_ledger(ledger, 1)
    # When its queue is paused and another job is enqueued
    await client.pause_queue("pr")
    second = await client.enqueue("test_record", {"ledger": str(ledger)}, queue="pr")
    # Then the running one completes and the new one waits
    await wait_for(client, first.id, {"completed"})
    await _settle(1.0)
    assert (await client.get_job(second.id)).status == "queued"
    await client.resume_queue("pr")
    await wait_for(client, second.id, {"completed"})


async def test_a_paused_queue_wakes_no_worker(broker: Broker, client: Client) -> None:
    # Given a paused queue, When jobs are enqueued, Then no wake-up token is left for idle
    # workers (they would reserve in vain), and a resume leaves one
    k = broker.keys("wk")
    await client.pause_queue("wk")
    for _ in range(3):
        await client.enqueue("test_echo", {}, queue="wk")
    admin = _admin()
    assert admin.llen(k.notify) == 0
    await client.resume_queue("wk")
    assert admin.llen(k.notify) > 0


# -- unique jobs ----------------------------------------------------------------------------------


@pytest.fixture
def producer_proc(installed_test_plugin: None, tmp_path: Path) -> Iterator[Producer]:
    prefix = f"wqtest-{uuid.uuid4().hex[:10]}"
    started = start_producer(tmp_path, prefix, {"WORKQUEUE_API_KEY": API_KEY})
    yield started
    started.stop()
    _delete_prefix(prefix)


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


async def test_unique_under_concurrent_posts_creates_exactly_one_job(
    producer_proc: Producer,
) -> None:
    # Given 40 concurrent posts of the same unique task (keys in different orders)
    bodies = [
        {"type": "test_echo", "queue": "uq", "unique": True, "payload": {"a": 1, "b": [1, 2]}},
        {"type": "test_echo", "queue": "uq", "unique": True, "payload": {"b": [1, 2], "a": 1}},
    ]
    async with httpx.AsyncClient(base_url=producer_proc.url, headers=_auth(), timeout=20) as h:
        answers = await asyncio.gather(*(h.post("/enqueue", json=bodies[i % 2]) for i in range(40)))
    # Then exactly one job was created: one 202, 39 answers 200 with the same job
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 39 + [202], codes
    assert len({a.json()["id"] for a in answers}) == 1
    admin = _admin()
    assert admin.zcard(f"{producer_proc.prefix}:{{uq}}:ledger") == 1
    # A unique task with another payload, or another queue, is another job
    async with httpx.AsyncClient(base_url=producer_proc.url, headers=_auth(), timeout=20) as h:
        other = await h.post("/enqueue", json={**bodies[0], "payload": {"a": 2}})
        elsewhere = await h.post("/enqueue", json={**bodies[0], "queue": "uq2"})
        plain = await h.post("/enqueue", json={**bodies[0], "unique": False})
    assert [other.status_code, elsewhere.status_code, plain.status_code] == [202, 202, 202]


async def test_unique_is_released_when_the_job_finishes(
    producer_proc: Producer, workers: WorkerProcs
) -> None:
    # Given a unique job that is waiting
    body = {"type": "test_echo", "queue": "ur", "unique": True, "payload": {"k": "v"}}
    with httpx.Client(base_url=producer_proc.url, headers=_auth(), timeout=10) as h:
        first = h.post("/enqueue", json=body)
        assert first.status_code == 202
        assert h.post("/enqueue", json=body).json()["id"] == first.json()["id"]
        # When a worker runs it to completion
        workers.prefix = producer_proc.prefix
        workers.start("-q", "ur")
        job_id = first.json()["id"]
        for _ in range(200):
            if h.get(f"/jobs/{job_id}").json()["status"] == "completed":
                break
            await asyncio.sleep(0.05)
        assert h.get(f"/jobs/{job_id}").json()["status"] == "completed"
        # Then posting it again creates a new job
        again = h.post("/enqueue", json=body)
        assert again.status_code == 202, again.text
        assert again.json()["id"] != job_id


async def test_unique_with_retention_zero_deletes_its_key(broker: Broker, client: Client) -> None:
    # Given a queue that keeps no completed record, and a unique job
    await broker.set_queue_settings("u0", completed_ttl_s=0)
    job = await client.enqueue("test_echo", {"x": 1}, queue="u0", unique=True)
    k = broker.keys("u0")
    admin = _admin()
    assert len(list(admin.scan_iter(match=k.base.replace("{", "[{]") + "uniq:*"))) == 1
    # When it completes
    from workqueue.broker.contract import FinishOp, OpKind

    res = await broker.reserve("u0", 1, lease_ms=60_000, worker_id="w", request_id="r")
    await broker.finish({"u0": [FinishOp(OpKind.ACK, job.id, res.jobs[0].token, b"null", -1)]})
    # Then its record and its unique key are gone
    assert admin.exists(k.job(job.id)) == 0
    assert list(admin.scan_iter(match=k.base.replace("{", "[{]") + "uniq:*")) == []


# -- GET /queues and the pause routes over HTTP, and the CLI --------------------------------------


async def test_queue_routes_over_http(producer_proc: Producer) -> None:
    with httpx.Client(base_url=producer_proc.url, timeout=10) as h:
        # the API key is enforced
        assert h.get("/queues").status_code == 401
        assert h.post("/queues/hq/pause").status_code == 401
        h.headers.update(_auth())
        h.post("/enqueue", json={"type": "test_echo", "queue": "hq", "priority": 4})
        h.post("/enqueue", json={"type": "test_echo", "queue": "hq"})
        paused = h.post("/api/queues/hq/pause")
        assert paused.status_code == 200 and paused.json()["paused"] is True
        rows = {row["name"]: row for row in h.get("/api/queues").json()}
        row = rows["hq"]
        assert row["paused"] is True and row["partitions"] == 1
        assert row["depth"]["queued"] == 2 and row["queued_by_priority"] == {"4": 1, "0": 1}
        assert set(row["depth"]) == {
            "queued",
            "scheduled",
            "retrying",
            "active",
            "completed",
            "failed",
            "cancelled",
        }
        assert row["oldest_waiting_seconds"] >= 0
        resumed = h.post("/queues/hq/resume")
        assert resumed.status_code == 200 and resumed.json()["paused"] is False
        assert h.get("/queues").json()[0]["paused"] is False
        assert h.post("/queues/bad%20name/pause").status_code in (400, 422)


def _cli(prefix: str, *args: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "workqueue", "queues", *args, "--json"],
        env={
            **__import__("os").environ,
            "WORKQUEUE_KEY_PREFIX": prefix,
            "WORKQUEUE_REDIS_URL": REDIS_URL,
        },
        capture_output=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


async def test_cli_pause_resume_and_list(client: Client, key_prefix: str) -> None:
    await client.enqueue("test_echo", {}, queue="cq", priority=9)
    paused = _cli(key_prefix, "pause", "cq")
    assert paused["paused"] is True and paused["was_paused"] is False
    assert _cli(key_prefix, "pause", "cq")["was_paused"] is True
    (row,) = _cli(key_prefix, "list")
    assert row["queue"] == "cq" and row["paused"] is True and row["queued"] == 1
    assert row["queued_by_priority"] == {"9": 1} and row["partitions"] == 1
    assert _cli(key_prefix, "resume", "cq")["paused"] is False
    assert (await queue_control.overview(client.broker))[0].paused is False


async def test_a_requeued_failed_job_keeps_its_priority_and_unique_place(
    broker: Broker, client: Client
) -> None:
    from workqueue.broker.contract import FinishOp, OpKind

    # Given a unique job of priority 5 that failed for good, and a waiting job of priority 0
    job = await client.enqueue("test_echo", {"u": 1}, queue="rq", priority=5, unique=True)
    res = await broker.reserve("rq", 1, lease_ms=60_000, worker_id="w", request_id="r1")
    await broker.finish({"rq": [FinishOp(OpKind.FAIL, job.id, res.jobs[0].token, "boom", -1)]})
    assert (await client.get_job(job.id)).status == "failed"
    low = await client.enqueue("test_echo", {"n": 0}, queue="rq")
    # When it is sent back to the queue
    assert await broker.requeue_failed("rq", [job.id]) == [job.id]
    # Then it is unfinished again and holds its unique place: a post answers it
    again = await client.enqueue("test_echo", {"u": 1}, queue="rq", unique=True)
    assert again.duplicate and again.id == job.id
    # And it starts before the job of priority 0
    res = await broker.reserve("rq", 2, lease_ms=60_000, worker_id="w", request_id="r2")
    assert [j.id for j in res.jobs] == [job.id, low.id]


async def test_unique_and_idempotency_key_together(client: Client) -> None:
    first = await client.enqueue(
        "test_echo", {"a": 1}, queue="ui", unique=True, idempotency_key="k1"
    )
    # another key, same unique task: the unique job answers (no idempotency conflict)
    second = await client.enqueue(
        "test_echo", {"a": 1}, queue="ui", unique=True, idempotency_key="k2"
    )
    assert second.duplicate and second.id == first.id
    # the same key again: its job answers
    third = await client.enqueue(
        "test_echo", {"a": 1}, queue="ui", unique=True, idempotency_key="k1"
    )
    assert third.duplicate and third.id == first.id


async def test_a_released_job_goes_back_to_the_front_of_its_priority(
    broker: Broker, client: Client
) -> None:
    from workqueue.broker.contract import FinishOp, OpKind

    # Given a job of priority 6 handed back unfinished (graceful stop), and one of priority 0
    high = await client.enqueue("test_echo", {"n": 6}, queue="rl", priority=6)
    res = await broker.reserve("rl", 1, lease_ms=60_000, worker_id="w", request_id="r1")
    low = await client.enqueue("test_echo", {"n": 0}, queue="rl")
    await broker.finish({"rl": [FinishOp(OpKind.RELEASE, high.id, res.jobs[0].token)]})
    # Then it waits in its own level and starts first
    admin = _admin()
    k = broker.keys("rl")
    assert admin.lrange(k.queued + ":6", 0, -1) == [high.id.encode()]
    res = await broker.reserve("rl", 2, lease_ms=60_000, worker_id="w", request_id="r2")
    assert [j.id for j in res.jobs] == [high.id, low.id]


async def test_cancelling_a_queued_job_of_a_priority_leaves_no_stray(
    broker: Broker, client: Client
) -> None:
    # Given a waiting job of priority 4
    job = await client.enqueue("test_echo", {}, queue="cx", priority=4)
    # When it is cancelled
    await client.cancel(job.id)
    # Then its level's list no longer holds it: reserve finds nothing, drops nothing
    admin = _admin()
    assert admin.llen(broker.keys("cx").queued + ":4") == 0
    res = await broker.reserve("cx", 5, lease_ms=60_000, worker_id="w", request_id="r")
    assert res.jobs == [] and res.dropped == []


async def test_partitioned_queue_pause_unique_and_overview(
    broker: Broker, client: Client, workers: WorkerProcs, tmp_path: Path
) -> None:
    # Given a queue of 4 partitions, paused (every partition's settings say so)
    await broker.partitions.set_partitions("pp", 4)
    row = await client.pause_queue("pp")
    assert row.paused and row.partitions == 4
    physical = await queue_control.physical_queues(broker, "pp")
    assert len(physical) == 4
    admin = _admin()
    assert all(admin.hget(broker.keys(p).settings, "paused") == b"1" for p in physical)
    # When 20 jobs are enqueued (spread over the partitions) and 20 unique twins concurrently
    ledger = tmp_path / "ledger.jsonl"
    for i in range(20):
        await client.enqueue("test_record", {"ledger": str(ledger), "i": i}, queue="pp")
    twins = await asyncio.gather(
        *(client.enqueue("test_echo", {"same": 1}, queue="pp", unique=True) for _ in range(20))
    )
    # Then one unique job exists, and nothing starts while paused
    assert len({t.id for t in twins}) == 1
    workers.start("-q", "pp", "--idle-wait-seconds", "0.5")
    await _settle(1.5)
    assert ledger_lines(ledger) == []
    row = (await client.queues())[0]
    assert row.depth["queued"] == 21 and row.partitions == 4
    # When resumed, every job runs
    await client.resume_queue("pp")
    await wait_ledger(ledger, 20, timeout=30)
