"""T19: inconsistent state written into Redis by hand is repaired by a running worker.

Each case is planted next to real jobs, under a real worker subprocess (1 s lease, 0.5 s idle
wait, so one housekeeping cycle is at most about a second):
- a lease (in-flight entry) for a job record that does not exist (an orphan);
- a queued id whose record is gone (an orphan);
- a second queued entry for a job that already completed, and a scheduled entry for one
  that is running (strays: acting on them would run a job twice);
- a running job whose lease entry vanishes while its worker is alive;
- records in no index (the sweep, on a private Redis): a job in flight for a worker that is
  gone and whose lease entry is lost, a queued job missing from the list, a delayed job
  missing from the scheduled index.

Expected: the worker keeps running, drops orphans and strays within one cycle with a warning
in its log and a counter, never runs a job twice (ledger), and a live job whose lease entry
vanished gets its lease back and completes once; a record in no index is put back by the
sweep (the lease-less in-flight one as an expired lease, so it is recovered and requeued),
with a warning, and runs once.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest
from redis_server import RedisServer
from services import Proc, Services, read_ledger

from workqueue.broker import Broker, BrokerConfig
from workqueue.broker.connection import create_redis
from workqueue.client import Client
from workqueue.job import NewJob

pytestmark = pytest.mark.slow

WORKER_ARGS = ("-q", "t19", "-c", "4", "--idle-wait-seconds", "0.5")


async def redis_ms(broker: Broker) -> int:
    seconds, micros = await broker.redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def status(broker: Broker, job_id: str) -> str | None:
    value = await broker.redis.hget(broker.keys("t19").job(job_id), "status")
    return value.decode() if value else None


async def wait_for(check: object, what: str, proc: Proc, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert proc.alive(), f"worker died:\n{proc.log()[-3000:]}"
        assert time.monotonic() < deadline, f"{what} did not happen:\n{proc.log()[-3000:]}"
        await asyncio.sleep(0.1)


async def test_orphans_and_strays_are_dropped_with_a_warning_and_run_nothing_twice(
    services: Services, client: Client, broker: Broker, redis_url: str, tmp_path: Path
) -> None:
    k = broker.keys("t19")
    ledger = str(tmp_path / "ledger.jsonl")
    worker = services.worker(redis_url, *WORKER_ARGS, lease=1.0)
    done = await client.enqueue("test_record", {"ledger": ledger}, queue="t19")
    await wait_for(lambda: _is(broker, done.id, "completed"), "first job", worker)
    running = await client.enqueue("test_record", {"ledger": ledger, "sleep": 3}, queue="t19")
    await wait_for(lambda: _is(broker, running.id, "active"), "second job start", worker)
    # Given: a lease for a missing record, a queued id without a record, a second queue entry
    # for the completed job, and a scheduled entry for the running job
    ghost_lease, ghost_queued = uuid.uuid4().hex, uuid.uuid4().hex
    now = await redis_ms(broker)
    await broker.redis.zadd(k.active, {ghost_lease: now - 1})
    await broker.redis.rpush(k.queued, ghost_queued, done.id)
    await broker.redis.zadd(k.scheduled, {running.id: now - 1})
    await broker.redis.rpush(k.notify, "1")
    planted_at = time.monotonic()

    # When the worker's next cycles run; Then every planted entry is gone within a cycle
    async def cleaned() -> bool:
        active = await broker.redis.zrange(k.active, 0, -1)
        return (
            await broker.redis.llen(k.queued) == 0
            and await broker.redis.zcard(k.scheduled) == 0
            and ghost_lease.encode() not in active
        )

    await wait_for(cleaned, "repair", worker, timeout=10)
    repair_s = time.monotonic() - planted_at
    await wait_for(lambda: _is(broker, running.id, "completed"), "second job", worker)
    # and each was reported: counters and a warning line per entry
    stats = await broker.queue_stats("t19")
    assert stats.get("orphans") == 2 and stats.get("strays") == 2, stats
    log = worker.log_file.read_text()
    assert log.count("(orphan)") == 2 and log.count("(stray)") == 2, log[-3000:]
    # and no job ran twice, no job record was touched by the strays
    runs = read_ledger(Path(ledger))
    assert runs == {done.id: 1, running.id: 1}, runs
    for job_id in (done.id, running.id):
        info = await broker.get_job(job_id, "t19")
        assert (info.status, info.attempts, info.lost_leases) == ("completed", 1, 0), info
    assert worker.alive()
    print(f"T19 orphans/strays repaired in {repair_s:.2f}s")


async def test_a_running_job_whose_lease_entry_vanished_keeps_its_lease(
    services: Services, client: Client, broker: Broker, redis_url: str, tmp_path: Path
) -> None:
    k = broker.keys("t19")
    ledger = str(tmp_path / "ledger.jsonl")
    worker = services.worker(redis_url, *WORKER_ARGS, lease=1.0)
    job = await client.enqueue("test_record", {"ledger": ledger, "sleep": 3}, queue="t19")
    await wait_for(lambda: _is(broker, job.id, "active"), "job start", worker)
    # Given a running job whose in-flight (lease) entry is deleted behind its worker's back
    assert await broker.redis.zrem(k.active, job.id) == 1
    removed_at = time.monotonic()

    # When the worker renews; Then the lease is back within one renewal period
    async def leased() -> bool:
        return await broker.redis.zscore(k.active, job.id) is not None

    await wait_for(leased, "lease repair", worker, timeout=5)
    repair_s = time.monotonic() - removed_at
    # and the job completes once, its outcome accepted
    await wait_for(lambda: _is(broker, job.id, "completed"), "completion", worker)
    assert read_ledger(Path(ledger)) == {job.id: 1}
    info = await broker.get_job(job.id, "t19")
    assert (info.attempts, info.lost_leases) == (1, 0), info
    assert "lease lost" not in worker.log() and "stale" not in worker.log()
    print(f"T19 vanished lease entry restored in {repair_s:.2f}s")


async def _is(broker: Broker, job_id: str, expected: str) -> bool:
    return await status(broker, job_id) == expected


async def test_records_in_no_index_are_put_back_by_the_sweep(
    services: Services, private_redis: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    """A private Redis, so the sweep's SCAN covers only this test's keys."""
    broker = Broker(create_redis(private_redis.url), BrokerConfig(prefix=key_prefix))
    try:
        await _sweep_case(services, broker, private_redis.url, tmp_path)
    finally:
        await broker.redis.aclose()


def _job(ledger: str, **kw: object) -> NewJob:
    payload = json.dumps({"ledger": ledger}).encode()
    fields: dict[str, object] = {"id": uuid.uuid4().hex, "type": "test_record", "queue": "t19"}
    fields.update(payload=payload, retries=2, timeout=30.0, **kw)
    return NewJob(**fields)  # type: ignore[arg-type]


async def _sweep_case(services: Services, broker: Broker, url: str, tmp_path: Path) -> None:
    k = broker.keys("t19")
    ledger = str(tmp_path / "ledger.jsonl")
    # Given a job in flight for a worker that is gone, whose lease entry is lost too (the
    # in-flight record has no lease), a queued job missing from the queue list, and a delayed
    # job missing from the scheduled index
    held, queued, delayed = _job(ledger), _job(ledger), _job(ledger, delay_ms=1500)
    await broker.enqueue([held])
    res = await broker.reserve(
        "t19", 1, lease_ms=600_000, worker_id="gone", request_id=uuid.uuid4().hex
    )
    assert [j.id for j in res.jobs] == [held.id]
    await broker.enqueue([queued, delayed])
    assert await broker.redis.zrem(k.active, held.id) == 1
    assert await broker.redis.lrem(k.queued, 0, queued.id) == 1
    assert await broker.redis.zrem(k.scheduled, delayed.id) == 1
    for job in (held, queued, delayed):
        assert await status(broker, job.id) in ("active", "queued", "scheduled")
    # When a worker runs with a fast sweep
    started = time.monotonic()
    worker = services.worker(url, *WORKER_ARGS, "--audit-seconds", "0.2", lease=1.0)
    ids = [held.id, queued.id, delayed.id]

    async def all_done() -> bool:
        return all([await _is(broker, i, "completed") for i in ids])

    # Then each is put back, with a warning, and runs once
    await wait_for(all_done, "repair and completion", worker, timeout=30)
    repair_s = time.monotonic() - started
    assert read_ledger(Path(ledger)) == dict.fromkeys(ids, 1)
    stats = await broker.queue_stats("t19")
    assert stats.get("repaired") == 3 and stats.get("lost_leases") == 1, stats
    log = worker.log_file.read_text()
    assert log.count("(consistency sweep)") == 3, log[-3000:]
    info = await broker.get_job(held.id, "t19")
    assert (info.attempts, info.lost_leases) == (2, 1), info
    rec = await broker.redis.hmget(k.job(delayed.id), "run_at", "started_at")
    late_ms = int(rec[1]) - int(rec[0])
    assert late_ms >= 0, f"the delayed job ran {-late_ms} ms early"
    print(f"T19 sweep: 3 records put back and run once in {repair_s:.2f}s (worker start incl.)")
