"""Fetching: reserve jobs per queue in priority order while slots are free; block when idle.

Each queue has its own reserve request id. A call whose reply is lost (the script ran, the
connection broke) is retried on *that queue* with the same id, so the broker replays the jobs
it leased then instead of leasing more and leaving those to expire; the id is renewed only
after that queue's call succeeded. (Defect 3 of issue 10: one id shared by all queues was
consumed by queue 1's next call.)

When nothing is there, the fetcher blocks on the queues' wake-up lists
(``broker.wait_for_work``) until work arrives or the next due time, capped at
``idle_wait_seconds``.

Partitioned queues: each logical queue is expanded to its live partitions (the current
layout's and those still draining; the layout is cached for ``PARTITIONS_CACHE_SECONDS``
and read again at once after a wake-up that found nothing). The queues keep their priority
order; within a queue the partitions are tried in turn from a starting partition that moves
on by one every round, so a partition with a backlog cannot starve the others (it fills the
free slots only in its own turn). A partition whose reserve failed goes first next round
(its request id replays the lost reply). The idle wait covers every partition's wake-up list.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger
from redis.exceptions import RedisError

from workqueue import clock
from workqueue.broker.connection import setup_problem
from workqueue.broker.contract import BrokerAPI, ReserveResult
from workqueue.broker.partition_map import partitions_of
from workqueue.log import sanitize
from workqueue.settings import WorkerSettings
from workqueue.worker.events import JobLog
from workqueue.worker.housekeeping import log_dropped
from workqueue.worker.settling import RECONNECT_MAX_SECONDS
from workqueue.worker.stats import WorkerStats

__all__ = ["Fetcher", "log_redis_error"]

#: after a wake-up that found nothing, partition layouts older than this are read again
WOKEN_MAX_AGE = 1.0


def log_redis_error(doing: str, exc: BaseException, retry_in: float) -> None:
    """An outage is a warning; a set-up error (login, TLS, ACL) is an error that says what
    to fix. Either way the caller retries after ``retry_in`` seconds (bounded backoff)."""
    problem = setup_problem(exc)
    if problem is None:
        logger.warning(
            "redis unavailable while {} ({}); retrying in {:.1f}s",
            doing,
            sanitize(exc, 200),
            retry_in,
        )
    else:
        logger.error("{} ({}); retrying in {:.1f}s", problem, sanitize(exc, 200), retry_in)


class Fetcher:
    """Reserves jobs for the free slots and hands them to ``start``."""

    def __init__(
        self,
        broker: BrokerAPI,
        settings: WorkerSettings,
        log: JobLog,
        stats: WorkerStats,
        start: Callable[[Any], object],
    ) -> None:
        self.broker = broker
        self.settings = settings
        self._log = log
        self._stats = stats
        self._start = start
        #: one request id per (physical) queue, kept after a failed call (see the module
        #: docstring)
        self.request_ids = {queue: uuid.uuid4().hex for queue in settings.queues}
        self._partitions = partitions_of(broker)
        #: logical queue -> the round number, which picks its starting partition
        self._turns: dict[str, int] = {}
        #: every physical queue fetched from last round (what an idle wait blocks on)
        self.physical: list[str] = list(settings.queues)

    async def _expanded(self, max_age: float | None) -> list[tuple[str, list[str]]]:
        """Each logical queue (priority order) with its live partitions."""
        queues = self.settings.queues
        if self._partitions is None:
            return [(queue, [queue]) for queue in queues]
        if max_age is None:
            live = await self._partitions.live_queues(queues)
        else:
            live = await self._partitions.live_queues(queues, max_age)
        return [(queue, live[queue]) for queue in queues]

    def _round(self, groups: list[tuple[str, list[str]]]) -> list[tuple[str, int, str]]:
        """This round's order: (logical queue, position, partition), each queue's partitions
        from its turn's starting partition on."""
        order: list[tuple[str, int, str]] = []
        for queue, parts in groups:
            n = len(parts)
            if n == 1:
                order.append((queue, 0, parts[0]))
                continue
            turn = self._turns.get(queue, 0)
            self._turns[queue] = turn + 1
            order += [(queue, (turn + i) % n, parts[(turn + i) % n]) for i in range(n)]
        return order

    async def reserve(self, free: int, *, max_age: float | None = None) -> tuple[int, float]:
        """Reserve up to ``free`` jobs, queue by queue in priority order (a partitioned
        queue's partitions in turn); returns the number started and how long an idle wait may
        last. A Redis error propagates (the queue that failed keeps its request id for the
        retry, and a partition goes first next round). ``max_age``: how old the cached
        partition layouts may be."""
        got = 0
        wait_s = self.settings.idle_wait_seconds
        settings = self.settings
        groups = await self._expanded(max_age)
        self.physical = [p for _, parts in groups for p in parts]
        for queue, position, partition in self._round(groups):
            want = free - got
            if want <= 0:
                break
            request_id = self.request_ids.get(partition)
            if request_id is None:
                request_id = self.request_ids[partition] = uuid.uuid4().hex
            try:
                result = await self.broker.reserve(
                    partition,
                    want,
                    lease_ms=settings.lease_ms,
                    worker_id=settings.worker_id,
                    request_id=request_id,
                )
            except BaseException:
                if queue in self._turns:
                    self._turns[queue] = position  # this partition goes first next round
                raise
            self.request_ids[partition] = uuid.uuid4().hex
            got += self._took(result)
            if result.next_due_ms is not None:
                wait_s = min(wait_s, max(0.0, (result.next_due_ms - result.now_ms) / 1000))
        return got, wait_s

    def _took(self, result: ReserveResult) -> int:
        self._stats.last_fetch_at = clock.now()
        for dropped in result.dropped:
            log_dropped(dropped, self._stats)
        jobs = result.jobs
        if not jobs:
            return 0
        if result.replayed:
            logger.info(
                "reserve on queue {} replayed: {} job(s) of a call whose reply was lost",
                result.queue,
                len(jobs),
            )
        log = self._log
        started = log.enabled("INFO")
        start = self._start
        for job in jobs:
            if started:
                log.add("INFO", job, "started")
            start(job)
        self._stats.reserved += len(jobs)
        log.added()
        return len(jobs)

    async def loop(
        self,
        stop: asyncio.Event,
        free: Callable[[], int],
        slot_free: asyncio.Event,
    ) -> None:
        """Fetch until ``stop`` is set."""
        backoff = 0.1
        woken = False
        while not stop.is_set():
            slots = free()
            if slots <= 0:
                slot_free.clear()
                await wait_unless(stop, slot_free.wait())
                continue
            try:
                # after a wake-up that found nothing, look at the layouts again (a queue may
                # have new partitions: ``queues set`` wakes the workers)
                got, wait_s = await self.reserve(slots, max_age=WOKEN_MAX_AGE if woken else None)
                backoff = 0.1
            except (RedisError, OSError) as exc:
                log_redis_error("fetching", exc, backoff)
                await wait_unless(stop, asyncio.sleep(backoff))
                backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)
                continue
            woken = False
            if got:
                continue
            try:
                waiting = self.broker.wait_for_work(self.physical, max(0.01, wait_s))
                woken = bool(await wait_unless(stop, waiting))
            except (RedisError, OSError) as exc:
                log_redis_error("waiting", exc, backoff)
                await wait_unless(stop, asyncio.sleep(backoff))
                backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)


async def wait_unless(stop: asyncio.Event, awaitable: Awaitable[Any]) -> Any:
    """Await ``awaitable`` unless ``stop`` is set first (then it is cancelled); its result,
    or None when stopped first."""
    task = asyncio.ensure_future(awaitable)
    if stop.is_set():
        task.cancel()
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when="FIRST_COMPLETED")
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await task
    if task.done() and not task.cancelled():
        return task.result()
    return None
