"""The read model of logical queues: partitions summed, jobs shown under their queue's name.

:class:`LogicalReads` wraps :class:`workqueue.broker.reads.ReadModel` (the broker mixes it
in instead): the read model's methods keep working on physical queues, and this layer

- expands a logical queue (or every known queue) to its live partitions wherever jobs are
  looked for (``get_job``, ``list_jobs``, ``locate_jobs``: the read model's ``_queues``);
- shows a job's ``queue`` as the logical name (``get_job``, ``list_jobs``);
- sums the figures of a queue's partitions, retired ones included so counters never go
  down (``queue_figures``, hence ``figures``, ``queue_stats``, ``/metrics``, ``stats``,
  ``queues list|show``); the oldest waiting age is the oldest of any partition.

``locate_jobs`` answers the *physical* queue of each job (where it is: ``requeue_failed``,
``finished_ids`` and ``purge_finished`` take physical queues). A physical name given to any
method stands for itself. Cost: the layouts of the queues read (one ``HMGET`` per queue and
:data:`~workqueue.broker.partition_map.PARTITIONS_CACHE_SECONDS`, pipelined), then the read
model's own round trips.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import msgspec

from workqueue.broker.contract import QueueFigures, SystemFigures
from workqueue.broker.partition_map import PartitionMap
from workqueue.broker.partitions import LAYOUT_FIELDS, logical_name
from workqueue.broker.reads import ReadModel, _s
from workqueue.errors import JobNotFound
from workqueue.job import JobInfo

__all__ = ["LogicalReads"]

#: the most queues whose layouts :meth:`LogicalReads.figures` reads ahead
_GUESS_MAX = 4096
#: the depth fields of a queue's figures, summed over its partitions
_DEPTHS = ("queued", "running", "scheduled", "retrying", "completed_kept", "failed_kept")


def _logical(info: JobInfo) -> JobInfo:
    name = logical_name(info.queue)
    return info if name == info.queue else msgspec.structs.replace(info, queue=name)


class LogicalReads(ReadModel):
    """The read model over logical queues (see the module docstring)."""

    #: the queues the last :meth:`figures` call showed (their layouts are read with the
    #: registry next time)
    _figure_queues: frozenset[str] = frozenset()

    @cached_property
    def partitions(self) -> PartitionMap:
        """This broker's partition layouts (cached reads, changes of N)."""
        return PartitionMap(self.redis, self.config.prefix)

    async def _queues(self, queue: str | None) -> list[str]:
        """The physical queues the read model looks in for jobs of ``queue`` (or of every
        known queue): their live partitions."""
        names = [queue] if queue else await self.known_queues()
        layouts = await self.partitions.layouts(names)
        return [p for q in names for p in layouts[q].live_queues()]

    async def figures(self, queues: Sequence[str] = ()) -> SystemFigures:
        """Every known queue's figures (plus ``queues``), partitions summed. The layouts of
        the queues the last call showed are read in the registry's round trip, so a process
        that reads figures again (``/metrics``) needs 2 round trips; its first call,
        or one that finds a new queue, reads those layouts in one more."""
        guess = sorted(self._figure_queues | set(queues))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.smembers(self.globals.queues)
            for q in guess:
                pipe.hmget(self.keys(q).settings, LAYOUT_FIELDS)
            replies = await pipe.execute()
        for q, raw in zip(guess, replies[1:], strict=True):
            self.partitions.remember(q, raw)
        names = sorted({_s(m) for m in replies[0]} | set(queues))
        self._figure_queues = frozenset(names if len(names) <= _GUESS_MAX else ())
        return await self.queue_figures(names)

    async def get_job(self, job_id: str, queue: str | None = None) -> JobInfo:
        """The job with this id, its ``queue`` the logical name. When not found with the
        cached layouts, they are read again once (a partition added moments ago)."""
        try:
            return _logical(await super().get_job(job_id, queue))
        except JobNotFound:
            names = [queue] if queue else await self.known_queues()
            stale = [q for q in names if self.partitions.cached(q, 0.5) is None]
            if not stale:
                raise
            for q in stale:
                self.partitions.forget(q)
            return _logical(await super().get_job(job_id, queue))

    async def list_jobs(
        self, status: str, queue: str | None = None, limit: int = 50
    ) -> list[JobInfo]:
        """Up to ``limit`` jobs in ``status`` over every partition, under the logical name."""
        return [_logical(info) for info in await super().list_jobs(status, queue, limit)]

    async def queue_figures(self, names: Sequence[str]) -> SystemFigures:
        """These queues' figures, each the sum of its partitions, in the order given."""
        layouts = await self.partitions.layouts(names)
        physical = {q: layouts[q].counted_queues() for q in names}
        if all(len(parts) == 1 for parts in physical.values()):
            return await super().queue_figures(names)
        flat = list(dict.fromkeys(p for parts in physical.values() for p in parts))
        figures = await super().queue_figures(flat)
        rows = {row.queue: row for row in figures.queues}
        return SystemFigures(
            now_ms=figures.now_ms,
            queues=[_summed(q, [rows[p] for p in physical[q]]) for q in names],
        )


def _summed(queue: str, rows: Sequence[QueueFigures]) -> QueueFigures:
    """One logical queue's figures from its partitions' figures."""
    total = QueueFigures(queue=queue)
    for row in rows:
        for name in _DEPTHS:
            setattr(total, name, getattr(total, name) + getattr(row, name))
        total.oldest_waiting_seconds = max(total.oldest_waiting_seconds, row.oldest_waiting_seconds)
        total.paused = total.paused or row.paused
        for key, value in row.counters.items():
            total.counters[key] = total.counters.get(key, 0) + value
    return total
