"""Limiting: the worker's step for jobs of limited types (SPEC 12, docs/scheduling.md "Limits").

The fetcher reserves as usual and hands every job to :meth:`Limiter.start`. A job of a type
without limits goes straight to the executor (a dict lookup: no Redis command). Jobs of limited
types are gathered per reserve and take one limit step:

1. their ``limit_key`` is read from their records (one round trip);
2. one ``limit_acquire`` call per bucket (type, or type + limit_key; one round trip for all):
   admitted jobs start; a concurrency slot is a holder entry kept until the run ends;
3. refused jobs are put back with ``defer`` (one call per queue): the attempt does not count,
   and the job waits in ``scheduled`` until the time the limit gave, so it is not fetched again
   before it may run (no hot loop).

While a job takes this step it holds a slot of this worker (``pending``), so the fetcher does
not over-reserve. When a run of a limited type ends, its slot is given back (``release``) and
the first waiters the freed slots can take are made due at once (``wake``). The holders of
running jobs are renewed at lease/3, alongside the leases; a run gone without an outcome (its
lease lost) gives its slot back at the next renewal, and a worker that dies gives it back when
the holder's deadline (its lease + 1 s) passes.

Run-time limits (``workqueue limits set``) are read every :data:`REFRESH_SECONDS`; a change
flushes the type's waiters so each takes its turn again under the new limits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from loguru import logger
from redis.exceptions import RedisError

from workqueue.broker.limits import LimitStore, RuntimeLimits, effective_limits, holder_member
from workqueue.job import ReservedJob
from workqueue.limits import LimitSpec, bucket_name
from workqueue.log import sanitize
from workqueue.registry import Registry
from workqueue.worker.runs import Run, RunKey

if TYPE_CHECKING:
    from workqueue.broker.broker import Broker

__all__ = ["REFRESH_SECONDS", "LimitCounters", "Limiter"]

#: how often a worker reads the run-time limits: a change applies within this (plus a renewal)
REFRESH_SECONDS = 5.0


class LimitCounters:
    """What the limit step did in this process (for tests, logs and metrics)."""

    __slots__ = ("acquire_calls", "admitted", "defer_calls", "deferred", "released", "woken")

    def __init__(self) -> None:
        self.acquire_calls = 0
        self.defer_calls = 0
        self.admitted = 0
        self.deferred = 0
        self.released = 0
        self.woken = 0


class Limiter:
    """Admits, holds back and releases jobs of limited types (see the module docstring)."""

    def __init__(self, broker: Broker, registry: Registry, *, lease_seconds: float) -> None:
        self.store = LimitStore(broker)
        self.lease_ms = int(lease_seconds * 1000)
        self.interval = max(0.2, lease_seconds / 3)
        self.declared: dict[str, LimitSpec] = {}
        for name in registry.names():
            job_type = registry.get(name)
            if job_type is not None and job_type.limits().limited:
                self.declared[name] = job_type.limits()
        self._types = set(registry.names())
        self.runtime: dict[str, RuntimeLimits] = {}
        #: type -> its limits, only for limited types (the hot path's one lookup)
        self.effective: dict[str, LimitSpec] = dict(self.declared)
        self.counters = LimitCounters()
        #: jobs reserved and taking the limit step (they hold a slot of this worker)
        self.pending = 0
        self._start: Callable[[ReservedJob], object] = lambda job: None
        self._slot_free: asyncio.Event | None = None
        self._batch: list[ReservedJob] = []
        self._releases: list[tuple[str, LimitSpec, str]] = []
        #: refused jobs to put back, per queue: (id, token, due ms)
        self._defers: dict[str, list[tuple[str, str, int]]] = {}
        self._keyed: list[tuple[str, str]] = []
        #: run key -> (bucket, limits, holder member) of each run holding a slot
        self._holders: dict[RunKey, tuple[str, LimitSpec, str]] = {}
        self._wake = asyncio.Event()
        self._flushed: dict[str, LimitSpec] = {}

    def bind(self, start: Callable[[ReservedJob], object], slot_free: asyncio.Event) -> None:
        """Where admitted jobs go (the executor) and the event that frees a fetcher slot."""
        self._start = start
        self._slot_free = slot_free

    # -- the fetch path --------------------------------------------------------------------

    def start(self, job: ReservedJob) -> object:
        """A reserved job: started at once unless its type is limited."""
        if job.type not in self.effective:
            return self._start(job)
        self._batch.append(job)
        self.pending += 1
        self._wake.set()
        return None

    def settle(self, settle: Callable[[Run], None]) -> Callable[[Run], None]:
        """Wrap the executor's outcome callback: a run of a limited type gives its slot back
        when its attempt ended (its outcome goes on to ``settle`` unchanged)."""

        def settled(run: Run) -> None:
            if self._holders:
                held = self._holders.pop(run.key, None)
                if held is not None:
                    self._releases.append(held)
                    self._wake.set()
            settle(run)

        return settled

    # -- the loops -------------------------------------------------------------------------

    async def loop(self, held: Callable[[], Iterable[Run]]) -> None:
        """Admit, defer and release as jobs come; renew holders and read the run-time limits
        on their schedules. Runs until cancelled."""
        tasks = [
            asyncio.create_task(self._work_loop(), name="wq-limits"),
            asyncio.create_task(self._renew_loop(held), name="wq-limits-renew"),
            asyncio.create_task(self._refresh_loop(), name="wq-limits-refresh"),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=2)

    async def _work_loop(self) -> None:
        backoff = 0.05
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.work_once()
                backoff = 0.05
            except (RedisError, OSError) as exc:
                logger.warning("redis unavailable while applying limits ({})", sanitize(exc, 200))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.interval)
                self._wake.set()

    async def work_once(self) -> None:
        """Admit the gathered jobs (start or defer them), then give back released slots.
        On a Redis error what is left stays for the next try (the jobs' leases are not
        renewed meanwhile: a long outage sends them back through lease recovery)."""
        if self._batch:
            batch, self._batch = self._batch, []
            try:
                await self._acquire(batch)
            except BaseException:
                self._batch = batch + self._batch
                raise
        if self._defers:
            await self._defer()
        if self._releases:
            releases, self._releases = self._releases, []
            try:
                await self._release(releases)
            except BaseException:
                self._releases = releases + self._releases
                raise

    async def _acquire(self, batch: list[ReservedJob]) -> None:
        """One limit_acquire per bucket: admitted jobs start, refused ones wait to be
        deferred (``_defers``)."""
        keys = await self.store.limit_keys([(job.queue, job.id) for job in batch])
        buckets: dict[str, tuple[LimitSpec, list[ReservedJob]]] = {}
        for job, key in zip(batch, keys, strict=True):
            spec = self.effective.get(job.type) or LimitSpec()
            entry = buckets.setdefault(bucket_name(job.type, key), (spec, []))
            entry[1].append(job)
        requests = [
            (bucket, spec, [(job.queue, job.id, job.token) for job in jobs])
            for bucket, (spec, jobs) in buckets.items()
        ]
        replies = await self.store.acquire(requests, self.lease_ms)
        self.counters.acquire_calls += len(requests)
        for (bucket, (spec, jobs)), (now, verdicts) in zip(buckets.items(), replies, strict=True):
            for job, verdict in zip(jobs, verdicts, strict=True):
                if verdict == 1:
                    if spec.concurrency:
                        member = holder_member(job.queue, job.id, job.token)
                        self._holders[(job.id, job.token)] = (bucket, spec, member)
                    self.pending -= 1
                    self.counters.admitted += 1
                    self._start(job)
                else:
                    self._defers.setdefault(job.queue, []).append((job.id, job.token, verdict))
                    logger.bind(job_id=job.id, type=job.type, queue=job.queue).info(
                        "held back by its limit (attempt not counted); back in at most {:.3f}s",
                        max(0, verdict - now) / 1000,
                    )
                    if bucket != job.type:
                        self._keyed.append((job.type, bucket[len(job.type) + 1 :]))

    async def _defer(self) -> None:
        """Put the refused jobs back (see defer.lua); their worker slots free up."""
        defers = self._defers
        await self.store.note_keyed(self._keyed)
        self._keyed = []
        done = await self.store.defer(defers)
        self._defers = {}
        self.counters.defer_calls += len(defers)
        for queue, items in defers.items():
            for (job_id, _token, _at), verdict in zip(items, done[queue], strict=True):
                self.pending -= 1
                if verdict == 1:
                    self.counters.deferred += 1
                elif verdict == 2:
                    logger.bind(job_id=job_id, queue=queue).info(
                        "cancelled while held back by its limit (it never ran)"
                    )
        if self._slot_free is not None:
            self._slot_free.set()

    async def _release(self, releases: list[tuple[str, LimitSpec, str]]) -> None:
        by_bucket: dict[str, tuple[LimitSpec, list[str]]] = {}
        for bucket, spec, member in releases:
            by_bucket.setdefault(bucket, (spec, []))[1].append(member)
        # the bucket's current limits decide how many waiters the freed slots take
        requests = [
            (bucket, self.effective.get(bucket.partition("#")[0], spec), members)
            for bucket, (spec, members) in by_bucket.items()
        ]
        woken = await self.store.release(requests)
        self.counters.released += len(releases)
        for at_ms, jobs in woken:
            if jobs:
                self.counters.woken += await self.store.wake(jobs, at_ms)

    async def _renew_loop(self, held: Callable[[], Iterable[Run]]) -> None:
        next_at = time.monotonic() + self.interval
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at + self.interval, time.monotonic())
            try:
                await self.renew_once(held())
            except (RedisError, OSError) as exc:
                logger.warning("could not renew limit slots ({})", sanitize(exc, 200))

    async def renew_once(self, held: Iterable[Run]) -> None:
        """Extend the slots of runs still going; give back those of runs gone without an
        outcome (their lease was lost)."""
        if not self._holders:
            return
        live = {run.key for run in held}
        renew: dict[str, list[str]] = {}
        for key, (bucket, spec, member) in list(self._holders.items()):
            if key in live:
                renew.setdefault(bucket, []).append(member)
            else:
                del self._holders[key]
                self._releases.append((bucket, spec, member))
                self._wake.set()
        if renew:
            await self.store.renew(list(renew.items()), self.lease_ms)

    async def prepare(self) -> None:
        """The first read of the run-time limits, before the first fetch (a Redis error
        leaves the declared limits in force until the next read)."""
        try:
            await self.refresh()
        except (RedisError, OSError) as exc:
            logger.warning("could not read the run-time limits ({})", sanitize(exc, 200))

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            await self.prepare()

    async def refresh(self) -> None:
        """Read the run-time limits; for each of this worker's types whose limits changed
        (or on the first read), flush its waiters so they take their turn again."""
        runtime = await self.store.runtime()
        self.runtime = runtime
        effective: dict[str, LimitSpec] = {}
        changed: list[tuple[str, LimitSpec]] = []
        for name in self._types:
            spec = effective_limits(self.declared.get(name), runtime.get(name))
            if spec.limited:
                effective[name] = spec
            known = name in self.declared or name in runtime or name in self._flushed
            if known and self._flushed.get(name) != spec:
                changed.append((name, spec))
        # the new limits first: the woken jobs are admitted under them
        self.effective = effective
        for name, spec in changed:
            await self._flush(name, spec)
            self._flushed[name] = spec

    async def _flush(self, job_type: str, spec: LimitSpec) -> None:
        woken = await self.store.flush(bucket_name(job_type), spec)
        keys = await self.store.keyed(job_type)
        emptied = []
        for key in keys:
            got = await self.store.flush(bucket_name(job_type, key), spec)
            woken += got
            emptied.append(key)
        await self.store.forget_keyed(job_type, emptied)
        if woken:
            self.counters.woken += await self.store.wake(woken)
            logger.info(
                "limits of job type {} are now {}; {} waiting job(s) woken to take their turn",
                job_type,
                spec.describe(),
                len(woken),
            )

    async def close(self, timeout: float) -> None:
        """Finish the limit step of the jobs gathered so far (stopping: start or defer them)
        and give back released slots, for at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (self._batch or self._defers or self._releases) and time.monotonic() < deadline:
            try:
                await self.work_once()
            except (RedisError, OSError):
                await asyncio.sleep(0.1)
