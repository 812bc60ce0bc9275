"""Reading and changing the partition layouts of queues (see :mod:`.partitions`).

:class:`PartitionMap` belongs to one broker (``broker.partitions``) and is shared by
everything the process does with it: the client places jobs, the fetcher and the housekeeper
expand logical queues, the read model sums partitions. A layout read from Redis is reused for
:data:`PARTITIONS_CACHE_SECONDS`, so a change of N is followed by every process within that
time (an idle worker: at its next wake-up; ``queues set`` wakes them).

Cost: one ``HMGET`` of partition 0's settings hash per queue per cache period (a pipeline
when several queues are stale at once); nothing in between.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from loguru import logger
from redis.asyncio import Redis

from workqueue.broker.keys import QueueKeys
from workqueue.broker.partitions import (
    LAYOUT_FIELDS,
    MAX_PARTITIONS,
    RETIRE_GRACE_MS,
    Layout,
    is_partition,
)
from workqueue.broker.scripts import source
from workqueue.errors import ConfigurationError

__all__ = ["PARTITIONS_CACHE_SECONDS", "STALE_SECONDS", "PartitionMap", "partitions_of"]

#: how long a layout read from Redis is reused (how long a change of N takes to be followed)
PARTITIONS_CACHE_SECONDS = 5.0
#: how old a layout may be and still place a job while it is read again in the background
#: (a producer's request then costs no extra round trip); older ones are read first. Well
#: under RETIRE_GRACE_MS, so no producer writes to a layout after it may have been retired.
STALE_SECONDS = 30.0
#: the most layouts kept in the cache (a cache, not a registry)
_CACHE_MAX = 4096
#: wake-up tokens a notify list may hold (the scripts' cap)
_NOTIFY_CAP = 64


def _canon(layouts: Sequence[int]) -> str:
    """A list of layouts as ``partitions.lua`` stores it: largest first, comma-separated."""
    return ",".join(str(n) for n in sorted(set(layouts), reverse=True))


class PartitionMap:
    """The partition layouts of queues: cached reads, changes of N, retiring drained layouts."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._script = redis.register_script(source("partitions"))
        #: queue -> (monotonic time read, layout)
        self._cache: dict[str, tuple[float, Layout]] = {}
        #: queue -> the read of its layout in flight (concurrent readers share it)
        self._loading: dict[str, asyncio.Future[Layout]] = {}
        #: background reads started by :meth:`cached_or_refresh`
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    def keys(self, queue: str) -> QueueKeys:
        """The key names of one physical queue."""
        return QueueKeys(self.prefix, queue)

    def cached(self, queue: str, max_age: float = PARTITIONS_CACHE_SECONDS) -> Layout | None:
        """The layout when read less than ``max_age`` seconds ago (no Redis call)."""
        entry = self._cache.get(queue)
        if entry is not None and time.monotonic() - entry[0] < max_age:
            return entry[1]
        if is_partition(queue):  # a physical name stands for itself
            return Layout(queue)
        return None

    def cached_or_refresh(self, queue: str) -> Layout | None:
        """The cached layout when fresh; when older but under :data:`STALE_SECONDS`, the
        same, and a background read refreshes it; else None (read it first)."""
        found = self.cached(queue)
        if found is not None:
            return found
        stale = self.cached(queue, STALE_SECONDS)
        if stale is not None and queue not in self._loading and queue not in self._refreshing:
            task = asyncio.get_running_loop().create_task(self._refresh(queue))
            self._refreshing[queue] = task
            task.add_done_callback(lambda _: self._refreshing.pop(queue, None))
        return stale

    async def _refresh(self, queue: str) -> None:
        try:
            await self.layouts([queue], max_age=0.0)
        except Exception as exc:  # the next use reads it again (or fails there, visibly)
            logger.debug("reading the partition layout of {} failed ({})", queue, exc)

    async def close(self) -> None:
        """Stop the background reads (before the connection closes)."""
        tasks = list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)

    async def layout(self, queue: str, max_age: float = PARTITIONS_CACHE_SECONDS) -> Layout:
        """One queue's layout (from the cache when fresh enough)."""
        found = self.cached(queue, max_age)
        if found is not None:
            return found
        return (await self.layouts([queue], max_age))[queue]

    async def layouts(
        self, queues: Sequence[str], max_age: float = PARTITIONS_CACHE_SECONDS
    ) -> dict[str, Layout]:
        """These queues' layouts; the stale ones read in one round trip."""
        found: dict[str, Layout] = {}
        stale: list[str] = []
        waits: dict[str, asyncio.Future[Layout]] = {}
        for queue in queues:
            layout = self.cached(queue, max_age)
            if layout is not None:
                found[queue] = layout
            elif queue in self._loading:  # being read already: share that read
                waits[queue] = self._loading[queue]
            else:
                stale.append(queue)
        stale = list(dict.fromkeys(stale))
        if stale:
            found.update(await self._read(stale))
        for queue, future in waits.items():
            try:
                found[queue] = await asyncio.shield(future)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not future.cancelled() or (task is not None and task.cancelling()):
                    raise
                found.update(await self._read([queue]))  # its reader was cancelled
        return found

    async def _read(self, queues: list[str]) -> dict[str, Layout]:
        """Read these layouts (one round trip); concurrent readers of them wait for it."""
        loop = asyncio.get_running_loop()
        futures = {queue: loop.create_future() for queue in queues}
        self._loading.update(futures)
        try:
            if len(queues) == 1:
                replies: list[Any] = [
                    await self.redis.hmget(self.keys(queues[0]).settings, LAYOUT_FIELDS)
                ]
            else:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for queue in queues:
                        pipe.hmget(self.keys(queue).settings, LAYOUT_FIELDS)
                    replies = await pipe.execute()
        except BaseException as exc:
            for future in futures.values():
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
                    future.exception()  # retrieved: no "never retrieved" warning
            raise
        finally:
            for queue, future in futures.items():
                if self._loading.get(queue) is future:
                    del self._loading[queue]
        found = {
            queue: self.remember(queue, raw) for queue, raw in zip(queues, replies, strict=True)
        }
        for queue, future in futures.items():
            future.set_result(found[queue])
        return found

    async def live_queues(
        self, queues: Sequence[str], max_age: float = PARTITIONS_CACHE_SECONDS
    ) -> dict[str, list[str]]:
        """Logical queue -> the physical queues workers fetch from (current and draining
        layouts), for each of ``queues``, in their order."""
        layouts = await self.layouts(queues, max_age)
        return {q: layouts[q].live_queues() for q in queues}

    def remember(self, queue: str, raw: Sequence[Any]) -> Layout:
        """Cache a layout read by someone else (the values of ``LAYOUT_FIELDS``, read now)."""
        layout = Layout.from_fields(queue, raw)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[queue] = (time.monotonic(), layout)
        return layout

    def forget(self, queue: str) -> None:
        """Drop a cached layout (the next use reads it again)."""
        self._cache.pop(queue, None)

    # -- changes -----------------------------------------------------------------------------

    async def set_partitions(self, queue: str, n: int) -> Layout:
        """Make ``n`` the queue's number of partitions (idempotent).

        The new partitions first get a copy of partition 0's settings (scripts read only
        their own slot), then ``partitions.lua`` changes N, then a wake-up token in
        partition 0's list lets idle workers look again. Jobs in partitions of the former
        layout stay where they are and drain: workers keep fetching from them until empty.
        """
        if is_partition(queue):
            raise ConfigurationError(f"{queue!r} is a partition, not a queue")
        if not 1 <= n <= MAX_PARTITIONS:
            raise ConfigurationError(f"partitions: must be 1 to {MAX_PARTITIONS}")
        target = Layout(queue, n)
        await self._copy_settings(queue, target.write_queues()[1:])
        raw = await self._script(keys=[self.keys(queue).settings], args=["set", n])
        notify = self.keys(queue).notify
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(notify, "1")
            pipe.ltrim(notify, -_NOTIFY_CAP, -1)
            await pipe.execute()
        self.forget(queue)
        return Layout.from_fields(queue, raw)

    async def _copy_settings(self, queue: str, partitions: Sequence[str]) -> None:
        """Partition 0's settings (the layout fields left out) into these partitions."""
        if not partitions:
            return
        raw: dict[Any, Any] = await self.redis.hgetall(self.keys(queue).settings)
        mapping = {k: v for k, v in raw.items() if k.decode(errors="replace") not in LAYOUT_FIELDS}
        if mapping:
            await self._write(partitions, mapping)

    async def write_settings(self, queue: str, mapping: Mapping[str, Any]) -> None:
        """Write settings fields to partition 0 and to every live partition of the queue, so
        each partition's scripts read them from their own slot (one pipeline)."""
        if not mapping:
            return
        layout = await self.layout(queue, max_age=0.0)
        await self._write(layout.live_queues(), mapping)

    async def _write(self, partitions: Sequence[str], mapping: Mapping[Any, Any]) -> None:
        if len(partitions) == 1:
            await self.redis.hset(self.keys(partitions[0]).settings, mapping=dict(mapping))
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for partition in partitions:
                pipe.hset(self.keys(partition).settings, mapping=dict(mapping))
            await pipe.execute()

    async def retire_drained(self, queue: str, grace_ms: int | None = None) -> list[int]:
        """Retire the draining layouts of ``queue`` whose partitions hold no record any more
        (an empty ledger each) once N has not changed for ``grace_ms``; returns the layouts
        retired. Safe to run from every process: the script retires a layout only if the
        layout is still as read. ``grace_ms`` None: :data:`RETIRE_GRACE_MS`."""
        grace = RETIRE_GRACE_MS if grace_ms is None else grace_ms
        layout = await self.layout(queue, max_age=0.0)
        if not layout.draining:
            return []
        partitions = {n: layout.layout_queues(n)[1:] for n in layout.draining}
        every = [p for n in layout.draining for p in partitions[n]]
        sizes: dict[str, int] = {}
        if every:
            async with self.redis.pipeline(transaction=False) as pipe:
                for partition in every:
                    pipe.zcard(self.keys(partition).ledger)
                sizes = dict(zip(every, await pipe.execute(), strict=True))
        retired: list[int] = []
        draining = list(layout.draining)
        for n in layout.draining:
            if any(sizes[p] for p in partitions[n]):
                continue
            moved = await self._script(
                keys=[self.keys(queue).settings],
                args=["retire", n, layout.partitions, _canon(draining), grace],
            )
            if int(moved):
                retired.append(n)
                draining.remove(n)
        if retired:
            self.forget(queue)
        return retired


def partitions_of(broker: object) -> PartitionMap | None:
    """A broker's partition map; None for a broker without partitions (a test's fake), whose
    queues are then their own only partition."""
    found = getattr(broker, "partitions", None)
    return found if isinstance(found, PartitionMap) else None
