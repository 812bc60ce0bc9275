"""Partitioned queues against the real Redis: placement, fetching, a live change of N with real
worker processes, idempotency keys across layouts, reads and operator commands."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from test_cli_admin import ok, wq
from worker_waits import ledger_lines
from wq_testkit import WorkerProcs

from workqueue.admin import purge
from workqueue.broker import Broker
from workqueue.broker.contract import FinishOp, OpKind
from workqueue.broker.partitions import Layout, key_partition, partition_name
from workqueue.client import Client, TaskSpec
from workqueue.errors import IdempotencyConflict
from workqueue.job import NewJob, ReservedJob
from workqueue.settings import WorkerSettings
from workqueue.worker.events import JobLog
from workqueue.worker.fetching import Fetcher
from workqueue.worker.stats import WorkerStats

pytestmark = pytest.mark.usefixtures("installed_test_plugin")


def new_job(queue: str, n: int) -> NewJob:
    return NewJob(uuid.uuid4().hex, "test_echo", queue, b'{"n": %d}' % n, 0, 5.0)


async def depths(broker: Broker, layout: Layout) -> dict[str, int]:
    return {p: await broker.redis.llen(broker.keys(p).queued) for p in layout.live_queues()}


async def wait_stats(broker: Broker, queue: str, field: str, want: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (await broker.queue_stats(queue)).get(field, 0) < want:
        if time.monotonic() > deadline:
            raise AssertionError(f"{field} is {await broker.queue_stats(queue)}, wanted {want}")
        await asyncio.sleep(0.1)


# -- layouts -----------------------------------------------------------------------------------


async def test_changes_of_n_are_recorded_and_drained_layouts_retire(broker: Broker) -> None:
    pm = broker.partitions
    assert await pm.layout("q") == Layout("q")
    four = await pm.set_partitions("q", 4)
    assert (four.partitions, four.draining, four.retired) == (4, (1,), ())
    assert await pm.set_partitions("q", 4) == four  # idempotent: same N changes nothing
    two = await pm.set_partitions("q", 2)
    assert (two.partitions, two.draining) == (2, (4, 1)) and two.changed_ms >= four.changed_ms
    # a record in partition 3 of the 4-layout keeps that layout draining; the grace too
    await broker.enqueue([new_job(partition_name("q", 3, 4), 1)])
    assert await pm.retire_drained("q") == []  # N changed moments ago
    assert await pm.retire_drained("q", grace_ms=0) == [1]
    assert (await pm.layout("q")).draining == (4,)
    await broker.redis.delete(
        *[k async for k in broker.redis.scan_iter(f"{broker.config.prefix}:*3of4*")]
    )
    assert await pm.retire_drained("q", grace_ms=0) == [4]
    done = await pm.layout("q", max_age=0)
    assert (done.partitions, done.draining, done.retired) == (2, (), (4, 1))
    # back to 4: layout 4 is current again, 2 drains, nothing is retired twice
    again = await pm.set_partitions("q", 4)
    assert (again.partitions, again.draining, again.retired) == (4, (2,), (1,))
    # the copies of the settings: every partition's scripts read their own
    await broker.set_queue_settings("q", completed_ttl_s=5)
    for p in again.live_queues():
        assert await broker.redis.hget(broker.keys(p).settings, "completed_ttl_ms") == b"5000"
    assert await broker.known_queues() == ["q"]  # the registry keeps logical names only


async def test_new_partitions_get_the_queue_settings_first(broker: Broker) -> None:
    await broker.set_queue_settings("mail", failed_ttl_s=60, max_lost_leases=2)
    layout = await broker.partitions.set_partitions("mail", 3)
    for p in layout.write_queues():
        stored = await broker.redis.hgetall(broker.keys(p).settings)
        assert stored[b"failed_ttl_ms"] == b"60000" and stored[b"max_lost_leases"] == b"2"
        assert (b"partitions" in stored) == (p == "mail")  # the layout lives in partition 0


# -- producing ---------------------------------------------------------------------------------


async def test_the_client_spreads_jobs_evenly_and_shows_the_logical_queue(
    client: Client, broker: Broker
) -> None:
    layout = await broker.partitions.set_partitions("q", 4)
    jobs = [await client.enqueue("test_echo", {"i": i}, queue="q") for i in range(200)]
    jobs += await client.enqueue_specs(
        [TaskSpec("test_echo", {"i": i}, queue="q") for i in range(100)]
    )
    assert {job.queue for job in jobs} == {"q"}
    assert set((await depths(broker, layout)).values()) == {75}  # round robin: exact shares
    stats = await broker.queue_stats("q")
    assert stats["queued"] == 300 and stats["enqueued"] == 300
    assert await broker.known_queues() == ["q"]
    listed = await broker.list_jobs("queued", "q", limit=500)
    assert len(listed) == 300 and {info.queue for info in listed} == {"q"}


async def test_get_job_in_partition_3(client: Client, broker: Broker, key_prefix: str) -> None:
    layout = await broker.partitions.set_partitions("q", 4)
    jobs = [await client.enqueue("test_echo", {"i": i}, queue="q") for i in range(4)]
    third = layout.write_queues()[3]
    (in_third,) = [j for j in jobs if await broker.redis.exists(broker.keys(third).job(j.id))]
    info = await client.get_job(in_third.id)
    assert info.id == in_third.id and info.queue == "q" and info.status == "queued"
    assert json.loads(ok(key_prefix, "jobs", "show", in_third.id, "--json"))["queue"] == "q"
    (location,) = await broker.locate_jobs([in_third.id])
    assert location.queue == third  # where it is: the partition
    # a fresh process whose layouts are not cached yet finds it too
    other = Broker(broker.redis, broker.config)
    assert (await other.get_job(in_third.id)).queue == "q"


async def test_an_idempotency_key_finds_its_job_across_partitions_and_layouts(
    client: Client, broker: Broker
) -> None:
    await broker.partitions.set_partitions("q", 4)
    key = next(f"k{i}" for i in range(100) if key_partition(f"k{i}", 4) == 3)
    first = await client.enqueue("test_echo", {"a": 1}, queue="q", idempotency_key=key)
    again = await client.enqueue("test_echo", {"a": 1}, queue="q", idempotency_key=key)
    assert again.id == first.id and again.duplicate and again.queue == "q"
    # N changes: the key's partition is now another one, the job is in layout 4's partition 3
    layout = await broker.partitions.set_partitions("q", 2)
    assert layout.partition_for_key(key) != partition_name("q", 3, 4)
    later = await client.enqueue("test_echo", {"a": 1}, queue="q", idempotency_key=key)
    assert later.id == first.id and later.duplicate
    batch = await client.enqueue_specs(
        [
            TaskSpec("test_echo", {"a": 1}, queue="q", idempotency_key=key),
            TaskSpec("test_echo", {"b": 2}, queue="q", idempotency_key="other"),
        ]
    )
    assert batch[0].id == first.id and batch[0].duplicate and not batch[1].duplicate
    with pytest.raises(IdempotencyConflict):
        await client.enqueue("test_echo", {"a": 2}, queue="q", idempotency_key=key)
    assert (await broker.queue_stats("q"))["enqueued"] == 2


# -- fetching (in-process fetcher, real Redis) -----------------------------------------------


async def test_fetching_keeps_order_per_partition_and_starves_no_partition(
    broker: Broker,
) -> None:
    layout = await broker.partitions.set_partitions("q", 3)
    p0, p1, p2 = layout.write_queues()
    backlog = [new_job(p0, n) for n in range(100)]
    few = [new_job(p, n) for p in (p1, p2) for n in range(3)]
    await broker.enqueue(backlog + few)
    started: list[ReservedJob] = []
    settings = WorkerSettings(queues=("q",), worker_id="w1", lease_seconds=60)
    fetcher = Fetcher(broker, settings, JobLog(), WorkerStats(), started.append)
    rounds = []
    for _ in range(3):
        got, _wait = await fetcher.reserve(10)
        rounds.append(got)
    assert rounds == [10, 10, 10]
    # within one rotation every partition had its turn: the backlog starved nobody
    assert {j.id for j in started} >= {j.id for j in few}
    assert set(fetcher.physical) == {p0, p1, p2}
    for p, written in ((p0, backlog), (p1, few[:3]), (p2, few[3:])):
        got_ids = [j.id for j in started if j.queue == p]
        assert got_ids == [j.id for j in written][: len(got_ids)]  # FIFO per partition


# -- a live change of N with real workers ----------------------------------------------------


@pytest.mark.slow
async def test_changing_n_4_2_1_on_a_live_queue_loses_and_doubles_nothing(
    client: Client, broker: Broker, workers: WorkerProcs, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.jsonl"
    pm = broker.partitions
    await pm.set_partitions("q", 4)
    worker_args = ("--queue", "q", "--concurrency", "4", "--idle-wait-seconds", "1")
    workers.start(*worker_args)

    def specs(n: int, delay: float | None = None) -> list[TaskSpec]:
        payload = {"ledger": str(ledger), "sleep": 0.02}
        return [TaskSpec("test_record", payload, queue="q", delay=delay) for _ in range(n)]

    ids = [j.id for j in await client.enqueue_specs(specs(160))]
    ids += [j.id for j in await client.enqueue_specs(specs(4, delay=1.5))]  # due later
    four = await pm.layout("q")
    assert all(d > 0 for d in (await depths(broker, four)).values())  # jobs in every partition
    await pm.set_partitions("q", 2)
    ids += [j.id for j in await client.enqueue_specs(specs(60))]
    await pm.set_partitions("q", 1)
    ids += [j.id for j in await client.enqueue_specs(specs(60))]
    workers.start(*worker_args)
    total = len(ids)
    await wait_stats(broker, "q", "done", total, timeout=90)
    await asyncio.sleep(0.5)  # a doubled run would show up now
    stats = await broker.queue_stats("q")
    assert stats["done"] == stats["enqueued"] == total and stats.get("failed", 0) == 0
    lines = ledger_lines(ledger)
    assert sorted(line["job_id"] for line in lines) == sorted(ids)  # each ran exactly once
    for job_id in ids:
        info = await client.get_job(job_id)
        assert (info.status, info.attempts, info.queue) == ("completed", 1, "q")
    # the kept records keep the old layouts draining; once purged, they retire
    layout = await pm.layout("q", max_age=0)
    assert (layout.partitions, layout.draining) == (1, (4, 2))
    assert await pm.retire_drained("q", grace_ms=0) == []
    assert await purge(broker, "completed", "q") == total
    assert await pm.retire_drained("q", grace_ms=0) == [4, 2]
    # the retired partitions' counters still count: figures never go down
    assert (await broker.queue_stats("q"))["done"] == total


# -- operator commands over partitions ---------------------------------------------------------


@pytest.mark.slow
async def test_retry_and_purge_failed_jobs_in_partitions(
    client: Client, broker: Broker, workers: WorkerProcs, key_prefix: str
) -> None:
    layout = await broker.partitions.set_partitions("q", 4)
    jobs = [await client.enqueue("test_fail", {}, queue="q", retries=0) for _ in range(8)]
    workers.start("--queue", "q")
    await wait_stats(broker, "q", "failed", 8, timeout=30)
    workers.stop_all()
    third = layout.write_queues()[3]
    (one,) = [j for j in jobs if await broker.redis.exists(broker.keys(third).job(j.id))][:1]
    assert ok(key_prefix, "jobs", "retry", one.id).strip() == "requeued 1 job"
    assert (await client.get_job(one.id)).status == "queued"
    out = ok(key_prefix, "jobs", "retry", "--all-failed", "--queue", "q")
    assert out.strip().endswith("requeued 7 jobs")
    assert (await broker.queue_stats("q"))["queued"] == 8
    workers.start("--queue", "q")
    await wait_stats(broker, "q", "failed", 16, timeout=30)
    assert (await broker.queue_stats("q"))["failed_kept"] == 8
    out = ok(key_prefix, "jobs", "purge", "--status", "failed", "--queue", "q", "--yes")
    assert out.strip().endswith("removed 8 failed jobs")
    assert (await broker.queue_stats("q"))["failed_kept"] == 0


def test_queues_set_partitions_shows_in_list_and_show(key_prefix: str) -> None:
    out = json.loads(ok(key_prefix, "queues", "set", "q", "--partitions", "4", "--json"))
    assert out["partitions"] == 4 and out["draining"] == [1]
    assert (
        ok(key_prefix, "queues", "set", "q", "--partitions", "2")
        .strip()
        .endswith("partitions 2 (draining: 4, 1)")
    )
    ok(key_prefix, "enqueue", "test_echo", "--queue", "q")
    ok(key_prefix, "enqueue", "test_echo", "--queue", "q")
    shown = json.loads(ok(key_prefix, "queues", "show", "q", "--json"))
    assert shown["partitions"] == 2 and shown["draining"] == [4, 1] and shown["queued"] == 2
    (listed,) = json.loads(ok(key_prefix, "queues", "list", "--json"))
    assert listed["queue"] == "q" and listed["partitions"] == 2
    assert "draining: 4, 1" in ok(key_prefix, "queues", "show", "q")
    for bad in ("0", str(257), "x"):
        done = wq(key_prefix, "queues", "set", "q", "--partitions", bad)
        assert done.returncode == 2 and "Traceback" not in done.stderr


# -- housekeeping over partitions (in-process housekeeper, real Redis) -------------------------


async def test_housekeeping_follows_the_partitions_and_retires_drained_layouts(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workqueue.broker import partition_map
    from workqueue.worker import housekeeping
    from workqueue.worker.housekeeping import Housekeeper

    monkeypatch.setattr(housekeeping, "LAYOUT_SECONDS", 0.1)
    monkeypatch.setattr(partition_map, "RETIRE_GRACE_MS", 0)
    pm = broker.partitions
    three = await pm.set_partitions("q", 3)
    # a due job left in partition 2 of the 3-layout: only its housekeeping can promote it
    await broker.enqueue(
        [NewJob(uuid.uuid4().hex, "test_echo", three.write_queues()[2], b"{}", 0, 5.0, delay_ms=1)]
    )
    keeper = Housekeeper(
        broker, ("q",), "w1", housekeep_seconds=0.2, lease_seconds=5, stats=WorkerStats()
    )
    task = asyncio.create_task(keeper.loop())
    try:
        await pm.set_partitions("q", 1)
        deadline = time.monotonic() + 10
        while (await pm.layout("q", max_age=0)).draining != (3,):
            assert time.monotonic() < deadline, await pm.layout("q", max_age=0)
            await asyncio.sleep(0.05)  # layout 1 retired at once; 3 still holds a job
        # the due job is promoted by the housekeeping of partition 2 (nobody reserves there)
        while (await broker.queue_stats("q"))["queued"] != 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        (job,) = (
            await broker.reserve(
                three.write_queues()[2], 5, lease_ms=5000, worker_id="w", request_id="r"
            )
        ).jobs
        await broker.finish({job.queue: [FinishOp(OpKind.ACK, job.id, job.token)]})
        await broker.purge_finished(job.queue, "completed")
        while (await pm.layout("q", max_age=0)).draining:  # empty now: retired by the keeper
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert (await pm.layout("q", max_age=0)).retired == (3,)
    finally:
        task.cancel()
        await asyncio.wait([task], timeout=5)


@pytest.mark.slow
async def test_a_killed_workers_jobs_in_retired_partitions_are_recovered(
    client: Client, broker: Broker, workers: WorkerProcs, tmp_path: Path
) -> None:
    pm = broker.partitions
    await pm.set_partitions("q", 4)
    first = workers.start("--queue", "q", lease=1.0)
    payload = {"ledger": str(tmp_path / "ledger.jsonl"), "sleeps": [60, 0]}
    jobs = [await client.enqueue("test_attempt_sleep", payload, queue="q") for _ in range(4)]
    await wait_stats(broker, "q", "active", 4, timeout=20)  # one running in each partition
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    await pm.set_partitions("q", 1)  # partitions 1-3 now drain: nobody writes there any more
    workers.start("--queue", "q", lease=1.0)
    await wait_stats(broker, "q", "done", 4, timeout=30)
    for job in jobs:
        info = await client.get_job(job.id)
        assert (info.status, info.attempts, info.lost_leases) == ("completed", 2, 1)


async def test_a_producer_places_by_a_stale_layout_while_reading_it_again(
    client: Client, broker: Broker
) -> None:
    from workqueue.broker.partition_map import STALE_SECONDS

    pm = broker.partitions
    await client.enqueue("test_echo", {}, queue="q")  # layout of 1 partition, now cached
    other = Broker(broker.redis, broker.config)  # another process changes N
    layout = await other.partitions.set_partitions("q", 4)
    queue, (read_at, cached) = "q", pm._cache["q"]
    pm._cache[queue] = (read_at - 10, cached)  # 10 s old: still used, read in the background
    await client.enqueue("test_echo", {}, queue="q")
    assert (await depths(broker, layout))["q"] == 2  # placed by the old layout, no waiting
    await asyncio.sleep(0.2)
    assert (await pm.layout("q")).partitions == 4  # refreshed meanwhile
    read_at, cached = pm._cache["q"]
    pm._cache[queue] = (read_at - STALE_SECONDS, Layout("q"))  # too old: read first
    for _ in range(4):
        await client.enqueue("test_echo", {}, queue="q")
    assert sorted((await depths(broker, layout)).values()) == [1, 1, 1, 3]


async def test_cancel_finds_the_partition_and_answers_the_logical_queue(
    client: Client, broker: Broker
) -> None:
    layout = await broker.partitions.set_partitions("q", 4)
    jobs = [await client.enqueue("test_echo", {}, queue="q") for _ in range(8)]
    for job, queue in zip(jobs, (None, "q") * 4, strict=True):
        result = await broker.cancel(job.id, queue)
        assert (result.job.status, result.job.queue) == ("cancelled", "q")
    assert all(d == 0 for d in (await depths(broker, layout)).values())
    assert (await broker.queue_stats("q"))["cancelled"] == 8
