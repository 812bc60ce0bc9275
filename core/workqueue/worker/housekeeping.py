"""Housekeeping: for each consumed queue, a loop taking bounded steps of the queue's duty.

One process per queue holds the duty at a time (an election in Redis, renewed by each step
of the holder; see the broker's ``housekeep``). A step recovers expired leases, promotes due
scheduled and retrying jobs, trims retention and checks consistency, each bounded. The loop
runs on its own schedule, independent of free slots and of queue order, so a worker saturated
by a higher queue still recovers a lower queue's dead leases and promotes its due jobs
(defect 6 of issue 10).

Schedule: after a step the loop sleeps until ``min(next_ms - now_ms, interval)``: the
earliest lease expiry or due time the step reported, but at least every ``interval``
(``min(housekeep_seconds, lease / 2)``: the consistency check and retention move on even
when nothing falls due, and the duty is renewed). When the step hit a bound (``more``) it
goes again almost at once. The duty is held for ``duty = min(3 * interval, lease)`` (at least
1 s), so the holder renews it at least twice per duty, and when the holder dies another
process takes over no later than the holder's own leases expire: a process that does not
hold the duty asks again every ``duty / 4``. A quiet step (it recovered, promoted, trimmed,
dropped and repaired nothing) is followed by a longer pause, ``min(next_ms - now_ms,
0.9 * duty)`` (the holder still renews the duty in time): a lease taken after that step
expires a whole lease later, after the next step, and the earliest deadline the step saw
still wakes it, so an idle queue (with or without kept finished records) costs fewer steps
without delaying any recovery. The consistency check then moves on one step per pause.

Partitioned queues: every live partition of a consumed queue (the current layout's and
those of layouts still draining) is a queue of its own here, with its own loop and its own
duty. Every :data:`LAYOUT_SECONDS` the housekeeper reads the layouts again (from the
broker's cache): a new partition gets a loop, a partition of a retired layout loses its
loop, and a draining layout whose partitions hold no record any more is retired (see
``PartitionMap.retire_drained``; any process may do it, the script keeps it consistent).
Log lines name the logical queue.
"""

from __future__ import annotations

import asyncio
import contextlib

from loguru import logger
from redis.exceptions import RedisError

from workqueue.broker.contract import (
    BrokerAPI,
    Dropped,
    DroppedReason,
    HousekeepResult,
    Recovered,
    RecoveredOutcome,
)
from workqueue.broker.partition_map import PartitionMap, partitions_of
from workqueue.broker.partitions import logical_name
from workqueue.log import sanitize
from workqueue.worker.stats import WorkerStats

__all__ = ["Housekeeper", "log_dropped", "log_recovered", "next_step_in"]

#: pause after a step that hit a bound (more work is waiting)
MORE_SECONDS = 0.05
#: the duty is held this many intervals (at most one lease): the holder renews it every step
DUTY_INTERVALS = 3
#: how often the partition layouts of the consumed queues are looked at again
LAYOUT_SECONDS = 10.0


def next_step_in(
    result: HousekeepResult,
    interval: float,
    retry: float | None = None,
    idle: float | None = None,
) -> float:
    """Seconds until the next step of a queue's housekeeping (see the module docstring);
    ``retry``: the pause of a process that does not hold the duty (default ``interval``);
    ``idle``: the longest pause after a quiet step (default ``interval``)."""
    if not result.held:
        return interval if retry is None else retry
    if result.more:
        return MORE_SECONDS
    quiet = not (
        result.recovered or result.dropped or result.promoted or result.trimmed or result.repaired
    )
    cap = max(interval, idle) if quiet and idle is not None else interval
    if result.next_ms is None:
        return cap
    return min(cap, max(0.0, (result.next_ms - result.now_ms) / 1000))


def log_recovered(rec: Recovered, stats: WorkerStats) -> None:
    """One line per expired lease recovered (same words as the reserve-time recovery had)."""
    stats.recovered += 1
    log = logger.bind(job_id=rec.job_id, type=rec.type, queue=logical_name(rec.queue))
    if rec.outcome == RecoveredOutcome.FAILED:
        stats.failed += 1
        log.error("failed for good: lease lost too many times (worker died each time)")
    elif rec.outcome == RecoveredOutcome.CANCELLED:  # H5: a cancel was pending
        log.info("cancelled: its lease expired while the cancel was pending")
    else:
        log.warning("recovered after a lost lease: requeued")


def log_dropped(drop: Dropped, stats: WorkerStats) -> None:
    """One line per entry not run as it is."""
    log = logger.bind(job_id=drop.job_id, type=drop.type or "-", queue=logical_name(drop.queue))
    if drop.reason == DroppedReason.INVALID:
        stats.failed += 1
        log.error("failed for good: invalid job: malformed record (not run)")
    elif drop.reason == DroppedReason.ORPHAN:
        log.warning("dropped an index entry whose job record is missing (orphan)")
    else:
        log.warning("dropped an index entry that disagrees with its job's state (stray)")


class Housekeeper:
    """One loop per queue calling ``broker.housekeep`` on the schedule above."""

    def __init__(
        self,
        broker: BrokerAPI,
        queues: tuple[str, ...],
        worker_id: str,
        *,
        housekeep_seconds: float,
        lease_seconds: float,
        stats: WorkerStats,
    ) -> None:
        self.broker = broker
        self.queues = queues
        self.worker_id = worker_id
        self.interval = min(housekeep_seconds, lease_seconds / 2)
        duty = max(1.0, min(DUTY_INTERVALS * self.interval, lease_seconds))
        self.duty_ms = int(duty * 1000)
        self.retry = duty / 4
        self.idle = 0.9 * duty
        self.stats = stats

    async def loop(self) -> None:
        """Run every (physical) queue's loop until cancelled."""
        partitions = partitions_of(self.broker)
        if partitions is None:
            await asyncio.gather(*(self.queue_loop(queue) for queue in self.queues))
            return
        loops: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                wanted = await self._partitions(partitions, loops)
                for queue in wanted:
                    if queue not in loops:
                        loops[queue] = asyncio.create_task(self.queue_loop(queue))
                for queue in [q for q in loops if q not in wanted]:
                    loops.pop(queue).cancel()
                await asyncio.sleep(LAYOUT_SECONDS)
        finally:
            for task in loops.values():
                task.cancel()
            if loops:  # redis-py may swallow a cancellation mid-command: never wait forever
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait(loops.values(), timeout=2)

    async def _partitions(
        self, partitions: PartitionMap, loops: dict[str, asyncio.Task[None]]
    ) -> list[str]:
        """The live partitions of the consumed queues, after retiring drained layouts (on a
        Redis error: the partitions already looked after, or the queues themselves)."""
        try:
            layouts = await partitions.layouts(self.queues)
            for queue, layout in list(layouts.items()):
                if layout.draining and await partitions.retire_drained(queue):
                    layouts[queue] = await partitions.layout(queue)
            return [p for queue in self.queues for p in layouts[queue].live_queues()]
        except (RedisError, OSError) as exc:
            logger.debug("reading the partition layouts failed ({})", sanitize(exc, 200))
            return list(loops) or list(self.queues)

    async def queue_loop(self, queue: str) -> None:
        """Housekeep one queue until cancelled."""
        backoff = 0.5
        while True:
            try:
                result = await self.step(queue)
            except (RedisError, OSError) as exc:
                logger.debug("housekeeping of {} failed ({})", queue, sanitize(exc, 200))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.interval)
                continue
            backoff = 0.5
            await asyncio.sleep(next_step_in(result, self.interval, self.retry, self.idle))

    async def step(self, queue: str) -> HousekeepResult:
        """One bounded step on one queue, its findings logged."""
        result = await self.broker.housekeep(queue, worker_id=self.worker_id, duty_ms=self.duty_ms)
        for rec in result.recovered:
            log_recovered(rec, self.stats)
        for drop in result.dropped:
            log_dropped(drop, self.stats)
        for job_id, status in result.repaired:
            logger.bind(job_id=job_id, queue=logical_name(queue)).warning(
                "repaired: a {} job was in no index; put back (consistency sweep)", status
            )
        return result
