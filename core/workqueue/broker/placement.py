"""Which partition a new job goes to (the producer side of partitioned queues).

- A job **with an idempotency key** goes to the partition that owns the key
  (:meth:`~workqueue.broker.partitions.Layout.partition_for_key`: a stable hash of the key),
  so a repeat of the post reaches the same partition and its enqueue script finds the
  duplicate atomically, as on an unpartitioned queue. For the idempotency period after N
  changed, a key may also have a record in its partition of an earlier layout: those few
  partitions are asked first (one pipelined ``GET``, plus one ``HMGET`` when found), and a
  job found there is the answer. (Two posts of one key racing with a change of N, one from a
  process that has not yet seen the change, can still both be written: that window is the
  layout cache, 5 s.)
- **Any other job** goes round robin over the partitions, per queue, from a random start
  per process: every partition gets the same share from each producer, whatever the number
  of producers, and a batch is spread too (one script call per partition in one pipeline).
  Random choice would be uneven over short runs; a hash of the (random) job id is random.

Unique jobs (a uniqueness fingerprint) need a canonical partition the same way: use
``layout.partition_for_key(fingerprint)`` and ``layout.key_candidates(fingerprint)``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import msgspec

from workqueue import clock
from workqueue.broker.contract import EnqueueResult
from workqueue.broker.partition_map import PartitionMap
from workqueue.broker.partitions import Layout, partition_name
from workqueue.job import NewJob

__all__ = ["Placer"]

#: the most queues whose round-robin position is remembered (a cache)
_TURNS_MAX = 4096


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class Placer:
    """Puts each new job of a logical queue into one of its physical partitions."""

    def __init__(self, partitions: PartitionMap, idempotency_ttl_s: float) -> None:
        self.partitions = partitions
        self.idempotency_ttl_ms = int(idempotency_ttl_s * 1000)
        self._turns: dict[str, int] = {}

    def place_cached(self, job: NewJob) -> NewJob | None:
        """The job in its partition without any Redis call, or None when that needs one (no
        layout under ``STALE_SECONDS`` cached, or earlier layouts must be asked for its key).
        A layout over ``PARTITIONS_CACHE_SECONDS`` old is read again in the background, so a
        producer's request costs one round trip however rarely it comes (up to 30 s apart)."""
        layout = self.partitions.cached_or_refresh(job.queue)
        if layout is None:
            return None
        if layout.partitions == 1 and not layout.draining:
            return job  # partition 0 is the queue itself
        if job.idempotency_key and self._check_earlier(layout, job.idempotency_key):
            return None
        return self._placed(layout, job)

    async def place(self, jobs: Sequence[NewJob]) -> list[NewJob | EnqueueResult]:
        """Each job in its partition, or (a key already used in an earlier layout's
        partition) the job found there, as a duplicate."""
        layouts = await self.partitions.layouts(list({job.queue for job in jobs}))
        placed: list[NewJob | EnqueueResult] = []
        asks: list[tuple[int, str, list[str]]] = []  # (position, key, partitions to ask)
        for job in jobs:
            layout = layouts[job.queue]
            key = job.idempotency_key
            if key and self._check_earlier(layout, key):
                asks.append((len(placed), key, layout.key_candidates(key)))
            placed.append(self._placed(layout, job))
        if asks:
            for (position, _, _), found in zip(asks, await self._earlier(asks), strict=True):
                if found is not None:
                    placed[position] = found
        return placed

    def _check_earlier(self, layout: Layout, key: str) -> bool:
        """True while a record written under ``key`` before N changed may still be kept in
        another partition (its key lives at most the idempotency period)."""
        if not layout.changed_ms:
            return False
        if clock.now() * 1000 - layout.changed_ms > self.idempotency_ttl_ms:
            return False
        return bool(layout.key_candidates(key))

    def _placed(self, layout: Layout, job: NewJob) -> NewJob:
        n = layout.partitions
        if job.unique_key:  # H4: a unique task's one partition, where its twin is found
            queue = layout.partition_for_key(job.unique_key)
        elif job.idempotency_key:
            queue = layout.partition_for_key(job.idempotency_key)
        elif n == 1:
            queue = job.queue
        else:
            turn = self._turns.get(job.queue)
            if turn is None:
                if len(self._turns) >= _TURNS_MAX:
                    self._turns.clear()
                turn = random.randrange(n)
            self._turns[job.queue] = turn + 1
            queue = partition_name(job.queue, turn % n, n)
        return job if queue == job.queue else msgspec.structs.replace(job, queue=queue)

    async def _earlier(self, asks: list[tuple[int, str, list[str]]]) -> list[EnqueueResult | None]:
        """For each ask, the job a partition of an earlier layout holds under the key."""
        redis = self.partitions.redis
        keys = self.partitions.keys
        async with redis.pipeline(transaction=False) as pipe:
            for _, key, partitions in asks:
                for partition in partitions:
                    pipe.get(keys(partition).idem_prefix + key)
            ids = iter(await pipe.execute())
        hits: list[tuple[int, str, str]] = []  # (ask number, partition, job id)
        for number, (_, _, partitions) in enumerate(asks):
            found = None
            for partition in partitions:
                job_id = next(ids)
                if job_id is not None and found is None:
                    found = (number, partition, _text(job_id))
            if found is not None:
                hits.append(found)
        answers: list[EnqueueResult | None] = [None] * len(asks)
        if not hits:
            return answers
        async with redis.pipeline(transaction=False) as pipe:
            for _, partition, job_id in hits:
                pipe.hmget(keys(partition).job(job_id), "status", "fp", "enqueued_at")
            records = await pipe.execute()
        for (number, _, job_id), (status, fingerprint, enqueued_at) in zip(
            hits, records, strict=True
        ):
            if status is None:  # the record is gone: the key no longer holds
                continue
            try:
                at_ms = int(enqueued_at or 0)
            except ValueError:
                at_ms = 0
            answers[number] = EnqueueResult(
                job_id, _text(status), True, _text(fingerprint or b""), at_ms
            )
        return answers
