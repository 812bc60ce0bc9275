"""Operator actions on the jobs: list, retry, purge, and the system figures.

Used by ``workqueue jobs ...``, ``workqueue stats`` and ``workqueue queues`` (and meant for an
HTTP admin surface later). Everything goes through the broker contract (the read model and
the atomic scripts ``requeue_failed.lua`` and ``purge.lua``), in batches.

Every job sent back to its queue gets a ``requeued`` event line in the log (job id, type and
queue; never a payload value), whoever asked for it.

Partitioned queues: retry and purge work partition by partition (each script call works on
one physical queue); ``locate_jobs`` answers a job's partition, and the log names the logical
queue.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from workqueue.broker.contract import BrokerAPI
from workqueue.broker.partition_map import partitions_of
from workqueue.broker.partitions import logical_name
from workqueue.broker.reads import FINISHED, LISTABLE
from workqueue.job import JobInfo
from workqueue.log import EventBatch
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

#: the statuses ``purge`` deletes
PURGEABLE = FINISHED

PurgeStatus = Literal["completed", "failed"]


async def _queues(broker: BrokerAPI, queue: str | None) -> list[str]:
    """The physical queues of ``queue`` (or of every known queue): their live partitions."""
    names = [queue] if queue else await broker.known_queues()
    partitions = partitions_of(broker)
    if partitions is None:
        return names
    layouts = await partitions.layouts(names, max_age=0.0)
    return [p for name in names for p in layouts[name].live_queues()]


async def list_jobs(
    broker: BrokerAPI, status: str, queue: str | None = None, limit: int = 50
) -> list[JobInfo]:
    """Up to ``limit`` jobs in ``status`` (of one queue, or of every known queue).

    Queued jobs come oldest first (the order they will run in); the other states newest first.
    """
    return await broker.list_jobs(status, queue, limit)


def _log_requeued(queue: str, ids: Sequence[str], types: dict[str, str]) -> None:
    """One ``requeued`` event line per job (written in one batch)."""
    events = EventBatch()
    for job_id in ids:
        pairs = (("queue", logical_name(queue)),)
        events.add("INFO", job_id, types.get(job_id, ""), None, "requeued", pairs)
    events.write()


async def _requeue(
    broker: BrokerAPI, queue: str, ids: list[str], types: dict[str, str]
) -> list[str]:
    """Requeue one batch of failed jobs of one queue and log each one requeued."""
    done = await broker.requeue_failed(queue, ids)
    if done:
        if not types:
            types = {loc.job_id: loc.type for loc in await broker.locate_jobs(done, queue)}
        _log_requeued(queue, done, types)
    return done


async def retry_job_ids(
    broker: BrokerAPI, ids: Sequence[str], queue: str | None = None
) -> list[str]:
    """Requeue these failed jobs; returns the ids requeued (unknown or unfailed ids are not)."""
    by_queue: dict[str, list[str]] = {}
    types: dict[str, str] = {}
    for loc in await broker.locate_jobs(ids, queue):
        if loc.status == "failed":
            by_queue.setdefault(loc.queue, []).append(loc.job_id)
            types[loc.job_id] = loc.type
    requeued: list[str] = []
    for q, q_ids in by_queue.items():
        for start in range(0, len(q_ids), BATCH):
            requeued += await _requeue(broker, q, q_ids[start : start + BATCH], types)
    return requeued


async def retry_jobs(
    broker: BrokerAPI,
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
    cutoff = await broker.server_time_ms()
    total = 0
    for q in await _queues(broker, queue):
        skipped = 0  # entries left in the index (record expired or no longer failed)
        while True:
            batch = await broker.finished_ids(
                q, "failed", until_ms=cutoff, offset=skipped, count=BATCH
            )
            if not batch:
                break
            done = await _requeue(broker, q, batch, {})
            total += len(done)
            skipped += len(batch) - len(done)
            if progress is not None:
                progress(len(batch))
    return total


async def purge(
    broker: BrokerAPI,
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
        cutoff: int | None = None
        while True:
            step = await broker.purge_finished(q, status, batch=BATCH, cutoff_ms=cutoff)
            cutoff = step.cutoff_ms
            removed += step.deleted
            if progress is not None:
                progress(step.examined)
            if step.examined < BATCH:
                break
    return removed


async def stats(broker: BrokerAPI) -> dict[str, Any]:
    """The system-wide figures of ``GET /metrics`` without its ``worker`` section."""
    return await system_figures(broker)
