"""Operator actions on the jobs in Redis: list, retry, purge, and the system figures.

Used by ``workqueue jobs ...`` and ``workqueue stats`` (and meant for an HTTP admin surface
later). Every function is a handful of round trips; the ones that change state go through the
broker's atomic scripts (``requeue_failed.lua``, ``purge.lua``) in batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from workqueue.broker.broker import Broker, job_info
from workqueue.job import JobInfo, Status
from workqueue.worker.metrics import system_figures

__all__ = [
    "BATCH",
    "LISTABLE",
    "PURGEABLE",
    "list_jobs",
    "purge",
    "retry_job_ids",
    "retry_jobs",
    "stats",
]

#: ids per script call when retrying or purging
BATCH = 500

#: the statuses ``list_jobs`` reads, each from its own index
LISTABLE = tuple(s.value for s in Status)
#: the statuses ``purge`` deletes
PURGEABLE = (Status.COMPLETED.value, Status.FAILED.value)

PurgeStatus = Literal["completed", "failed"]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _index(broker: Broker, queue: str, status: str) -> str:
    k = broker.keys(queue)
    return {
        "scheduled": k.scheduled,
        "queued": k.queued,
        "active": k.active,
        "retrying": k.retry,
        "completed": k.completed,
        "failed": k.failed,
    }[status]


async def _queues(broker: Broker, queue: str | None) -> list[str]:
    return [queue] if queue else await broker.known_queues()


async def list_jobs(
    broker: Broker, status: str, queue: str | None = None, limit: int = 50
) -> list[JobInfo]:
    """Up to ``limit`` jobs in ``status`` (of one queue, or of every known queue).

    Queued jobs come oldest first (the order they will run in); the other states newest first
    by their index score (finish time, due time or lease deadline). Two round trips: the
    indexes, then every record.
    """
    if status not in LISTABLE:
        raise ValueError(f"status must be one of {', '.join(LISTABLE)}")
    if limit <= 0:
        return []
    queues = await _queues(broker, queue)
    if not queues:
        return []
    async with broker.redis.pipeline(transaction=False) as pipe:
        for q in queues:
            index = _index(broker, q, status)
            if status == "queued":
                pipe.lrange(index, 0, limit - 1)
            else:
                pipe.zrevrange(index, 0, limit - 1, withscores=True)
        replies = await pipe.execute()
    found: list[tuple[float, int, str, str]] = []  # (sort key, position, queue, id)
    for q, reply in zip(queues, replies, strict=True):
        for position, item in enumerate(reply):
            if status == "queued":
                found.append((0.0, position, q, _s(item)))
            else:
                member, score = item
                found.append((-float(score), position, q, _s(member)))
    found.sort(key=lambda row: (row[0], row[1]))
    found = found[:limit]
    if not found:
        return []
    async with broker.redis.pipeline(transaction=False) as pipe:
        for _, _, q, job_id in found:
            pipe.hgetall(broker.keys(q).job(job_id))
        records = await pipe.execute()
    return [
        job_info(job_id, q, record)
        for (_, _, q, job_id), record in zip(found, records, strict=True)
        if record
    ]


async def retry_job_ids(broker: Broker, ids: Sequence[str], queue: str | None = None) -> list[str]:
    """Requeue these failed jobs; returns the ids requeued (unknown or unfailed ids are not)."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return []
    queues = await _queues(broker, queue)
    if not queues:
        return []
    # Find each id's queue: one pipelined HGET status per (id, queue).
    async with broker.redis.pipeline(transaction=False) as pipe:
        for job_id in wanted:
            for q in queues:
                pipe.hget(broker.keys(q).job(job_id), "status")
        statuses = await pipe.execute()
    by_queue: dict[str, list[str]] = {}
    for i, job_id in enumerate(wanted):
        for j, q in enumerate(queues):
            if statuses[i * len(queues) + j] == b"failed":
                by_queue.setdefault(q, []).append(job_id)
                break
    requeued: list[str] = []
    for q, q_ids in by_queue.items():
        for start in range(0, len(q_ids), BATCH):
            requeued += await broker.requeue_failed(q, q_ids[start : start + BATCH])
    return requeued


async def retry_jobs(
    broker: Broker,
    ids: Sequence[str] = (),
    *,
    all_failed: bool = False,
    queue: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Requeue failed jobs, the given ``ids`` or every failed job (of ``queue``, or all).

    With ``all_failed``, only jobs that had failed when the call began are requeued, so a
    job that fails again meanwhile is not picked up twice. Returns how many were requeued.
    """
    if not all_failed:
        return len(await retry_job_ids(broker, ids, queue))
    now_s, now_us = await broker.redis.time()
    cutoff = int(now_s) * 1000 + int(now_us) // 1000
    total = 0
    for q in await _queues(broker, queue):
        index = broker.keys(q).failed
        skipped = 0  # entries left in the index (record expired or no longer failed)
        while True:
            batch = [
                _s(m)
                for m in await broker.redis.zrangebyscore(
                    index, "-inf", cutoff, start=skipped, num=BATCH
                )
            ]
            if not batch:
                break
            done = await broker.requeue_failed(q, batch)
            total += len(done)
            skipped += len(batch) - len(done)
            if progress is not None:
                progress(len(batch))
    return total


async def purge(
    broker: Broker,
    status: PurgeStatus | str,
    queue: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Delete finished jobs in ``status`` (completed or failed); returns how many records.

    ``progress`` is called with the number of index entries examined after each batch.

    Jobs that finish while the purge runs are left for the next one. Unfinished jobs are never
    touched (see ``purge.lua``).
    """
    if status not in PURGEABLE:
        raise ValueError(f"status must be one of {', '.join(PURGEABLE)}")
    removed = 0
    for q in await _queues(broker, queue):
        k = broker.keys(q)
        index = k.completed if status == "completed" else k.failed
        cutoff: int | str = ""
        while True:
            raw = await broker.scripts.purge(
                keys=[index], args=[k.job_prefix, k.idem_prefix, status, BATCH, cutoff]
            )
            cutoff, examined, deleted = int(raw[0]), int(raw[1]), int(raw[2])
            removed += deleted
            if progress is not None:
                progress(examined)
            if examined < BATCH:
                break
    return removed


async def stats(broker: Broker) -> dict[str, Any]:
    """The system-wide figures of ``GET /metrics`` without its ``worker`` section."""
    return await system_figures(broker)
