"""The operator commands as real subprocesses: stats, jobs show/list/retry/purge, enqueue,
plugins; against the real Redis, with a worker subprocess where jobs must run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from wq_testkit import REDIS_URL, TEST_PLUGIN, WorkerProcs

from workqueue.broker import Broker
from workqueue.errors import JobNotFound

pytestmark = pytest.mark.usefixtures("installed_test_plugin")


def wq(
    prefix: str, *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m workqueue ARGS`` with the test plugin and this test's key prefix."""
    full_env = {
        **os.environ,
        "WORKQUEUE_PLUGINS": TEST_PLUGIN,
        "WORKQUEUE_KEY_PREFIX": prefix,
        "WORKQUEUE_REDIS_URL": REDIS_URL,
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "workqueue", *args],
        env=full_env,
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(prefix: str, *args: str, **kwargs: Any) -> str:
    done = wq(prefix, *args, **kwargs)
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done.stdout


def enqueue(prefix: str, job_type: str, payload: str = "{}", *args: str) -> str:
    out = ok(prefix, "enqueue", job_type, "--payload", payload, *args)
    job_id, status = out.split()[:2]
    assert len(job_id) == 32 and status in ("queued", "scheduled")
    return job_id


def show(prefix: str, job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ok(prefix, "jobs", "show", job_id, "--json"))
    return data


def wait_record(
    prefix: str, job_id: str, status: str, min_attempts: int = 1, queue: str = "default"
) -> dict[str, str]:
    """Poll the job record until it has ``status`` after at least ``min_attempts`` starts."""
    r = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            record: dict[str, str] = r.hgetall(f"{prefix}:{{{queue}}}:job:{job_id}")
            if record.get("status") == status and int(record.get("attempts", 0)) >= min_attempts:
                return record
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} is {record}, wanted {status}")
            time.sleep(0.05)
    finally:
        r.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# -- enqueue and show ---------------------------------------------------------------------------


def test_enqueue_then_show(key_prefix: str) -> None:
    job_id = enqueue(key_prefix, "test_echo", '{"hello": "world"}', "--retries", "5")
    data = show(key_prefix, job_id)
    assert data["id"] == job_id and data["type"] == "test_echo" and data["queue"] == "default"
    assert data["status"] == "queued" and data["retries"] == 5 and data["attempts"] == 0
    assert set(data) == {
        "id",
        "type",
        "queue",
        "status",
        "attempts",
        "retries",
        "enqueued_at",
        "started_at",
        "finished_at",
        "result",
        "error",
        "progress",
        "history",
    }
    table = ok(key_prefix, "jobs", "show", job_id)
    assert job_id in table and "test_echo" in table and "queued" in table


def test_enqueue_writes_its_enqueued_line_to_the_event_log(key_prefix: str, tmp_path: Path) -> None:
    """``workqueue enqueue`` logs the job's ``enqueued`` line in the event log's format (not
    loguru's default on stderr), with no payload value; stdout stays the command's answer."""
    secret = "payload-secret-0815"
    log = tmp_path / "events.txt"
    done = wq(
        key_prefix,
        "enqueue",
        "test_echo",
        "--payload",
        json.dumps({"s": secret}),
        "--log-file",
        str(log),
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    job_id = done.stdout.split()[0]
    lines = log.read_text().splitlines()
    assert len(lines) == 1, lines
    assert f"| job={job_id} | type=test_echo |" in lines[0] and "| enqueued |" in lines[0]
    assert "| INFO | cli |" in lines[0] and secret not in lines[0]


def test_enqueue_options_and_json(key_prefix: str) -> None:
    out = ok(
        key_prefix,
        "enqueue",
        "test_echo",
        "--payload",
        "{}",
        "--queue",
        "other",
        "--delay",
        "60",
        "--timeout",
        "5",
        "--idempotency-key",
        "k1",
        "--json",
    )
    first = json.loads(out)
    assert first["status"] == "scheduled" and first["queue"] == "other"
    again = json.loads(
        ok(
            key_prefix,
            *("enqueue", "test_echo", "--payload", "{}", "--queue", "other"),
            *("--delay", "60", "--timeout", "5", "--idempotency-key", "k1", "--json"),
        )
    )
    assert again["id"] == first["id"] and again["duplicate"] is True


def test_enqueue_priority_and_unique(key_prefix: str) -> None:
    import redis
    from wq_testkit import REDIS_URL

    args = ("enqueue", "test_echo", "--payload", '{"n": 1}', "--queue", "pq", "--json")
    first = json.loads(ok(key_prefix, *args, "--priority", "7", "--unique"))
    twin = json.loads(ok(key_prefix, *args, "--priority", "7", "--unique"))
    other = json.loads(ok(key_prefix, *args))  # not unique: a second job
    assert twin["id"] == first["id"] and twin["duplicate"] is True
    assert other["id"] != first["id"]
    conn = redis.Redis.from_url(REDIS_URL)
    try:
        assert conn.lrange(f"{key_prefix}:{{pq}}:queued:7", 0, -1) == [first["id"].encode()]
        assert conn.lrange(f"{key_prefix}:{{pq}}:queued", 0, -1) == [other["id"].encode()]
    finally:
        conn.close()
    assert "--priority" in ok(key_prefix, "enqueue", "--help")


def test_enqueue_bad_payload_names_the_problem(key_prefix: str) -> None:
    bad_json = wq(key_prefix, "enqueue", "test_echo", "--payload", "{bad")
    assert bad_json.returncode == 1
    assert bad_json.stderr.startswith("error: payload: not valid JSON")
    assert len(bad_json.stderr.strip().splitlines()) == 1 and "Traceback" not in bad_json.stderr
    not_object = wq(key_prefix, "enqueue", "test_echo", "--payload", "[1, 2]")
    assert not_object.returncode == 1 and "payload" in not_object.stderr
    schema = wq(key_prefix, "enqueue", "test_sync_add", "--payload", '{"a": "x", "b": 1}')
    assert schema.returncode == 1 and "payload.a" in schema.stderr
    unknown = wq(key_prefix, "enqueue", "no_such_type")
    assert unknown.returncode == 1 and "unknown job type" in unknown.stderr
    assert "test_echo" in unknown.stderr  # the known types are listed
    assert "Traceback" not in schema.stderr + unknown.stderr + not_object.stderr


# -- list, retry ----------------------------------------------------------------------------------


def test_failed_job_listed_then_retried(key_prefix: str, workers: WorkerProcs) -> None:
    workers.start()
    job_id = enqueue(key_prefix, "test_permanent")
    done_id = enqueue(key_prefix, "test_echo")
    wait_record(key_prefix, job_id, "failed")
    wait_record(key_prefix, done_id, "completed")
    listed = json.loads(ok(key_prefix, "jobs", "list", "--status", "failed", "--json"))
    assert [j["id"] for j in listed] == [job_id]
    assert listed[0]["status"] == "failed" and "PermanentError" in (listed[0]["error"] or "")
    table = ok(key_prefix, "jobs", "list", "--status", "failed")
    assert job_id in table and done_id not in table
    completed = json.loads(ok(key_prefix, "jobs", "list", "--status", "completed", "--json"))
    assert [j["id"] for j in completed] == [done_id]

    out = ok(key_prefix, "jobs", "retry", job_id)
    assert "requeued 1 job" in out
    # The worker runs it again: a second attempt, failed again.
    record = wait_record(key_prefix, job_id, "failed", min_attempts=2)
    assert int(record["attempts"]) == 2

    # A completed job and an unknown id are not failed: exit 1, naming them.
    refused = wq(key_prefix, "jobs", "retry", done_id, "f" * 32)
    assert refused.returncode == 1 and "requeued 0 jobs" in refused.stdout
    assert refused.stderr.startswith("error:") and done_id in refused.stderr
    assert "f" * 32 in refused.stderr
    assert wait_record(key_prefix, done_id, "completed")["attempts"] == "1"


def test_retry_all_failed(key_prefix: str, workers: WorkerProcs) -> None:
    workers.start("--queue", "default", "--queue", "other")
    a = enqueue(key_prefix, "test_permanent")
    b = enqueue(key_prefix, "test_permanent")
    c = enqueue(key_prefix, "test_permanent", "{}", "--queue", "other")
    for job_id, queue in ((a, "default"), (b, "default"), (c, "other")):
        wait_record(key_prefix, job_id, "failed", queue=queue)
    out = ok(key_prefix, "jobs", "retry", "--all-failed", "--queue", "default")
    assert "requeued 2 jobs" in out
    for job_id in (a, b):
        wait_record(key_prefix, job_id, "failed", min_attempts=2)
    assert wait_record(key_prefix, c, "failed", queue="other")["attempts"] == "1"
    out = ok(key_prefix, "jobs", "retry", "--all-failed")
    assert "requeued 3 jobs" in out
    wait_record(key_prefix, c, "failed", min_attempts=2, queue="other")


def test_list_filters_by_queue_and_limit(key_prefix: str) -> None:
    first = enqueue(key_prefix, "test_echo", "{}", "--queue", "q1")
    second = enqueue(key_prefix, "test_echo", "{}", "--queue", "q1")
    other = enqueue(key_prefix, "test_echo", "{}", "--queue", "q2")
    listed = json.loads(ok(key_prefix, "jobs", "list", "-s", "queued", "--queue", "q1", "--json"))
    assert [j["id"] for j in listed] == [first, second]  # oldest first
    one = json.loads(ok(key_prefix, "jobs", "list", "-s", "queued", "--limit", "1", "--json"))
    assert len(one) == 1
    everything = json.loads(ok(key_prefix, "jobs", "list", "-s", "queued", "--json"))
    assert {j["id"] for j in everything} == {first, second, other}
    assert json.loads(ok(key_prefix, "jobs", "list", "--json")) == []  # default: failed


async def test_retry_logs_a_requeued_event_per_job(
    key_prefix: str, broker: Broker, tmp_path: Path
) -> None:
    """``jobs retry`` writes one ``requeued`` line per job to the event log: job id, type and
    queue, never a payload value; stdout and stderr stay the command's own."""
    secret = "payload-secret-4711"
    ids = [enqueue(key_prefix, "test_echo", json.dumps({"s": secret})) for _ in range(3)]
    other = enqueue(key_prefix, "test_echo", "{}", "--queue", "other")
    k = broker.keys("default")
    # Fail them as finish.lua would leave them (no worker needed for a failed record).
    for job_id, queue in [(i, "default") for i in ids] + [(other, "other")]:
        q = broker.keys(queue)
        await broker.redis.lrem(q.queued, 0, job_id)
        await broker.redis.hset(q.job(job_id), mapping={"status": "failed", "finished_at": 1})
        await broker.redis.zadd(q.failed, {job_id: 1})
    log = tmp_path / "events.txt"
    done = wq(key_prefix, "jobs", "retry", ids[0], "--log-file", str(log))
    assert done.returncode == 0 and done.stderr == "" and "requeued 1 job" in done.stdout
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    assert (
        f"| job={ids[0]} | type=test_echo |" in lines[0]
        and "| requeued | queue=default" in lines[0]
    )
    assert "| INFO | cli |" in lines[0]

    json_log = tmp_path / "events.jsonl"
    out = ok(key_prefix, "jobs", "retry", "--all-failed", "--log-file", str(json_log), "--log-json")
    assert "requeued 3 jobs" in out
    events = [json.loads(line) for line in json_log.read_text().splitlines()]
    assert sorted((e["job_id"], e["queue"]) for e in events) == sorted(
        [(ids[1], "default"), (ids[2], "default"), (other, "other")]
    )
    assert {(e["event"], e["type"], e["role"]) for e in events} == {
        ("requeued", "test_echo", "cli")
    }
    assert secret not in log.read_text() + json_log.read_text()
    assert await broker.redis.llen(k.queued) == 3


def test_retry_needs_ids_or_all_failed(key_prefix: str) -> None:
    assert wq(key_prefix, "jobs", "retry").returncode == 2
    assert wq(key_prefix, "jobs", "retry", "x", "--all-failed").returncode == 2


# -- purge ----------------------------------------------------------------------------------------


async def test_purge_removes_finished_records_only(
    key_prefix: str, workers: WorkerProcs, broker: Broker
) -> None:
    proc = workers.start()
    done = [enqueue(key_prefix, "test_echo") for _ in range(3)]
    failed = enqueue(key_prefix, "test_permanent")
    for job_id in done:
        wait_record(key_prefix, job_id, "completed")
    wait_record(key_prefix, failed, "failed")
    workers.stop_all()
    assert proc.poll() is not None
    waiting = enqueue(key_prefix, "test_echo")

    declined = wq(key_prefix, "jobs", "purge", "--status", "completed", input="n\n")
    assert declined.returncode == 1
    assert (await broker.get_job(done[0])).status == "completed"

    out = ok(key_prefix, "jobs", "purge", "--status", "completed", "--yes")
    assert "removed 3 completed jobs" in out
    for job_id in done:
        with pytest.raises(JobNotFound):
            await broker.get_job(job_id)
    assert await broker.redis.zcard(broker.keys("default").completed) == 0
    assert (await broker.get_job(waiting)).status == "queued"
    assert (await broker.get_job(failed)).status == "failed"
    gone = wq(key_prefix, "jobs", "show", done[0])
    assert gone.returncode == 1 and gone.stderr.startswith("error: no job with id")

    out = ok(key_prefix, "jobs", "purge", "--status", "failed", input="y\n")
    assert "removed 1 failed job" in out
    with pytest.raises(JobNotFound):
        await broker.get_job(failed)
    assert (await broker.get_job(waiting)).status == "queued"
    assert await broker.redis.lrange(broker.keys("default").queued, 0, -1) == [waiting.encode()]
    # Counters are history: purging does not change them.
    stats = json.loads(ok(key_prefix, "stats", "--json"))
    assert stats["jobs_done"] == 3 and stats["jobs_failed"] == 1


def test_purge_needs_a_status(key_prefix: str) -> None:
    assert wq(key_prefix, "jobs", "purge", "--yes").returncode == 2
    assert wq(key_prefix, "jobs", "purge", "--status", "queued", "--yes").returncode == 2


# -- stats and plugins ----------------------------------------------------------------------------


def test_stats_totals(key_prefix: str, workers: WorkerProcs) -> None:
    workers.start()
    ran = [enqueue(key_prefix, "test_echo") for _ in range(2)]
    failed = enqueue(key_prefix, "test_permanent")
    for job_id in ran:
        wait_record(key_prefix, job_id, "completed")
    wait_record(key_prefix, failed, "failed")
    workers.stop_all()
    enqueue(key_prefix, "test_echo")
    enqueue(key_prefix, "test_echo", "{}", "--queue", "later", "--delay", "600")
    stats = json.loads(ok(key_prefix, "stats", "--json"))
    assert stats["total_jobs_in_queue"] == 1
    assert stats["jobs_done"] == 2 and stats["jobs_failed"] == 1
    assert stats["scheduled"] == 1 and stats["enqueued"] == 5 and stats["running"] == 0
    assert "worker" not in stats
    assert stats["queues"]["default"]["jobs_in_queue"] == 1
    assert stats["queues"]["later"]["scheduled"] == 1
    assert stats["types"]["test_echo"]["done"] == 2
    assert stats["types"]["test_permanent"]["failed"] == 1
    table = ok(key_prefix, "stats")
    assert "total_jobs_in_queue" in table and "later" in table and "test_permanent" in table


def test_plugins_lists_the_test_plugin(key_prefix: str) -> None:
    table = ok(key_prefix, "plugins")
    assert "wq-testplugin-good" in table and "0.2.0" in table and "test_echo" in table
    data = json.loads(ok(key_prefix, "plugins", "--json"))
    (plugin,) = data
    assert plugin["distribution"] == "wq-testplugin-good" and plugin["version"] == "0.2.0"
    assert {"test_echo", "test_permanent", "test_sync_add"} <= set(plugin["job_types"])


# -- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("stats",),
        ("jobs", "show", "abc"),
        ("jobs", "list"),
        ("jobs", "retry", "--all-failed"),
        ("jobs", "purge", "--status", "completed", "--yes"),
        ("enqueue", "test_echo"),
    ],
)
def test_unreachable_redis_is_one_line(key_prefix: str, args: tuple[str, ...]) -> None:
    url = f"redis://user:s3cret@127.0.0.1:{closed_port()}/0"
    done = wq(key_prefix, *args, "--redis-url", url)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: cannot reach Redis at redis://user:***@127.0.0.1:")
    assert "s3cret" not in done.stderr and "Traceback" not in done.stderr


def test_unknown_job_id(key_prefix: str) -> None:
    done = wq(key_prefix, "jobs", "show", "nope")
    assert done.returncode == 1 and done.stderr.strip() == "error: no job with id 'nope'"


def test_usage_errors_exit_2(key_prefix: str) -> None:
    for args in (
        ("stats", "--no-such-option"),
        ("jobs", "list", "--status", "bogus"),
        ("enqueue",),
        ("plugins", "--nope"),
    ):
        done = wq(key_prefix, *args)
        assert done.returncode == 2, args
        assert "Traceback" not in done.stderr


# -- the admin operations in batches ------------------------------------------------------------


async def _finished_records(broker: Broker, status: str, n: int) -> list[str]:
    """Write ``n`` finished records straight into one index (as finish.lua leaves them)."""
    k = broker.keys("default")
    index = k.completed if status == "completed" else k.failed
    ids = [f"{status}-{i:05d}" for i in range(n)]
    async with broker.redis.pipeline(transaction=False) as pipe:
        for i, job_id in enumerate(ids):
            pipe.hset(
                k.job(job_id),
                mapping={"type": "test_echo", "status": status, "attempts": 1, "retries": 0},
            )
            pipe.zadd(index, {job_id: 1000 + i})
        await pipe.execute()
    await broker.redis.sadd(broker.globals.queues, "default")
    return ids


async def test_purge_and_retry_all_work_in_batches(broker: Broker) -> None:
    from workqueue import admin

    k = broker.keys("default")
    await _finished_records(broker, "completed", 1203)
    # Stray index entries: one whose record expired, one pointing at an unfinished job.
    await broker.redis.zadd(k.completed, {"expired": 1, "stray": 2})
    await broker.redis.hset(k.job("stray"), mapping={"type": "test_echo", "status": "queued"})
    assert await admin.purge(broker, "completed") == 1203
    assert await broker.redis.zcard(k.completed) == 0
    assert await broker.redis.hget(k.job("stray"), "status") == b"queued"

    failed = await _finished_records(broker, "failed", 1107)
    await broker.redis.zadd(k.failed, {"expired": 1})
    assert await admin.retry_jobs(broker, all_failed=True) == 1107
    assert await broker.redis.llen(k.queued) == 1107
    assert await broker.redis.zcard(k.failed) == 1  # only the entry without a record
    assert (await broker.get_job(failed[-1])).status == "queued"
    listed = await admin.list_jobs(broker, "queued", limit=10)
    assert [j.id for j in listed] == failed[:10]
