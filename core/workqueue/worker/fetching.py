"""Fetching: reserve jobs per queue in priority order while slots are free; block when idle.

Each queue has its own reserve request id. A call whose reply is lost (the script ran, the
connection broke) is retried on *that queue* with the same id, so the broker replays the jobs
it leased then instead of leasing more and leaving those to expire; the id is renewed only
after that queue's call succeeded. (Defect 3 of issue 10: one id shared by all queues was
consumed by queue 1's next call.)

When nothing is there, the fetcher blocks on the queues' wake-up lists
(``broker.wait_for_work``) until work arrives or the next due time, capped at
``idle_wait_seconds``.
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
from workqueue.log import sanitize
from workqueue.settings import WorkerSettings
from workqueue.worker.events import JobLog
from workqueue.worker.housekeeping import log_dropped
from workqueue.worker.settling import RECONNECT_MAX_SECONDS
from workqueue.worker.stats import WorkerStats

__all__ = ["Fetcher", "log_redis_error"]


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
        #: one request id per queue, kept after a failed call (see the module docstring)
        self.request_ids = {queue: uuid.uuid4().hex for queue in settings.queues}

    async def reserve(self, free: int) -> tuple[int, float]:
        """Reserve up to ``free`` jobs, queue by queue in priority order; returns the number
        started and how long an idle wait may last. A Redis error propagates (the queue that
        failed keeps its request id for the retry)."""
        got = 0
        wait_s = self.settings.idle_wait_seconds
        settings = self.settings
        for queue in settings.queues:
            want = free - got
            if want <= 0:
                break
            result = await self.broker.reserve(
                queue,
                want,
                lease_ms=settings.lease_ms,
                worker_id=settings.worker_id,
                request_id=self.request_ids[queue],
            )
            self.request_ids[queue] = uuid.uuid4().hex
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
        while not stop.is_set():
            slots = free()
            if slots <= 0:
                slot_free.clear()
                await wait_unless(stop, slot_free.wait())
                continue
            try:
                got, wait_s = await self.reserve(slots)
                backoff = 0.1
            except (RedisError, OSError) as exc:
                log_redis_error("fetching", exc, backoff)
                await wait_unless(stop, asyncio.sleep(backoff))
                backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)
                continue
            if got:
                continue
            try:
                await wait_unless(
                    stop, self.broker.wait_for_work(self.settings.queues, max(0.01, wait_s))
                )
            except (RedisError, OSError) as exc:
                log_redis_error("waiting", exc, backoff)
                await wait_unless(stop, asyncio.sleep(backoff))
                backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)


async def wait_unless(stop: asyncio.Event, awaitable: Awaitable[Any]) -> None:
    """Await ``awaitable`` unless ``stop`` is set first (then it is cancelled)."""
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
        task.result()
