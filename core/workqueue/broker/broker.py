"""The broker: the job state machine's operations, each one atomic script call on Redis.

Hot-path cost: one ``reserve`` round trip hands out up to N jobs; one ``finish`` round trip
settles a batch of outcomes (sent as one MessagePack argument); one ``enqueue`` round trip
writes a whole batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import msgspec
from redis.asyncio import Redis

from workqueue.broker.channel import ScriptChannel, pack
from workqueue.broker.keys import DEFAULT_PREFIX, GlobalKeys, QueueKeys
from workqueue.broker.reads import ReadModel
from workqueue.broker.scripts import Scripts
from workqueue.job import NewJob, ReservedJob

__all__ = ["ENQUEUE_CHUNK", "Broker", "BrokerConfig", "FinishOp", "Recovered", "ReserveResult"]

NOTIFY_CAP = 64
#: the most jobs one enqueue script call writes (bigger batches go in several calls)
ENQUEUE_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Settings shared by everything that touches the job records."""

    prefix: str = DEFAULT_PREFIX
    completed_ttl_s: float = 24 * 3600
    failed_ttl_s: float = 7 * 24 * 3600
    idempotency_ttl_s: float = 24 * 3600
    max_lost_leases: int = 3


class FinishOp(msgspec.Struct, frozen=True):
    """One outcome for ``finish``: ack with a result, fail, or release."""

    op: Literal["ack", "fail", "release"]
    job_id: str
    token: str
    data: bytes | str = b""
    #: for "fail": the retry delay in ms, or -1 when the job must not be retried
    delay_ms: int = -1


@dataclass(frozen=True, slots=True)
class Recovered:
    """A job whose lease had expired, found during a reserve."""

    job_id: str
    queue: str
    type: str
    outcome: str  # "requeued" or "failed"


@dataclass(slots=True)
class ReserveResult:
    """What one reserve call handed out and found."""

    now_ms: int
    next_wake_ms: int | None
    jobs: list[ReservedJob] = field(default_factory=list)
    recovered: list[Recovered] = field(default_factory=list)


_STATUS = {b"queued": "queued", b"scheduled": "scheduled"}

_OPS_ENCODER = msgspec.msgpack.Encoder()


def _wire_op(op: FinishOp) -> tuple[str, str, str, str, int]:
    """One op as the finish script reads it (Redis's Lua MessagePack has no binary type)."""
    data = op.data
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    return (op.op, op.job_id, op.token, data, op.delay_ms)


def _s(value: Any) -> str:
    # "replace": a tampered record's bytes must not crash the worker or a reader
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class Broker(ReadModel):
    """Job operations against one Redis (or one cluster) for any number of queues."""

    def __init__(self, redis: Redis, config: BrokerConfig | None = None) -> None:
        self.redis = redis
        self.config = config or BrokerConfig()
        self.globals = GlobalKeys(self.config.prefix)
        self.scripts = Scripts(redis)
        self._known_queues: set[str] = set()
        self._keys_cache: dict[str, QueueKeys] = {}
        #: the enqueue path's own connection (plain clients; others go through redis-py)
        self._channel = ScriptChannel(redis) if hasattr(redis, "connection_pool") else None

    def keys(self, queue: str) -> QueueKeys:
        """The key names of one queue."""
        return QueueKeys(self.config.prefix, queue)

    # -- enqueue -------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[tuple[str, str, bool, str, int]]:
        """Write jobs; one script call per queue and chunk, all in one round trip.

        Returns, in order, ``(id, status, duplicate, fingerprint, enqueued_at_ms)`` per job.
        A duplicate is an existing job found by idempotency key or id. Each script call writes
        at most :data:`ENQUEUE_CHUNK` jobs atomically (so a huge batch never holds Redis for
        long); the calls go out pipelined on the enqueue channel, a few at a time.
        """
        if not jobs:
            return []
        first = jobs[0].queue
        if all(job.queue == first for job in jobs):
            by_queue: dict[str, list[int]] = {first: list(range(len(jobs)))}
        else:
            by_queue = {}
            for index, job in enumerate(jobs):
                by_queue.setdefault(job.queue, []).append(index)
        new_queues = [q for q in by_queue if q not in self._known_queues]
        plan: list[list[int]] = []
        calls: list[tuple[str, list[NewJob]]] = []
        for queue, indexes in by_queue.items():
            for at in range(0, len(indexes), ENQUEUE_CHUNK):
                chunk = indexes[at : at + ENQUEUE_CHUNK]
                plan.append(chunk)
                calls.append((queue, [jobs[i] for i in chunk]))
        if self._channel is not None:
            commands: list[Callable[[], bytes]] = [
                partial(self._pack_enqueue, queue, batch) for queue, batch in calls
            ]
            if new_queues:
                commands.insert(0, partial(pack, ("SADD", self.globals.queues, *new_queues)))
            replies = await self._channel.execute(commands, self.scripts.enqueue)
            if new_queues:
                added = replies.pop(0)
                if isinstance(added, Exception):
                    raise added
        else:
            if new_queues:
                await self.redis.sadd(self.globals.queues, *new_queues)
            replies = []
            for queue, batch in calls:
                keys, args = self._enqueue_args(queue, batch)
                replies.append(await self.scripts.enqueue(keys=keys, args=args))
        self._known_queues.update(new_queues)
        results: list[tuple[str, str, bool, str, int] | None] = [None] * len(jobs)
        for raw, indexes in zip(replies, plan, strict=True):
            if isinstance(raw, Exception):
                raise raw
            self._collect(raw, indexes, results, jobs)
        return [r for r in results if r is not None]

    def _queue_keys(self, queue: str) -> QueueKeys:
        keys = self._keys_cache.get(queue)
        if keys is None:
            if len(self._keys_cache) > 1024:
                self._keys_cache.clear()
            keys = self._keys_cache[queue] = self.keys(queue)
        return keys

    def _enqueue_args(self, queue: str, jobs: Sequence[NewJob]) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of one enqueue.lua call (see the script for the layout)."""
        k = self._queue_keys(queue)
        shapes: dict[tuple[Any, ...], int] = {}
        tail: list[Any] = []
        for job in jobs:
            shape = (
                job.type,
                job.retries,
                job.timeout,
                job.delay_ms,
                job.run_at_ms,
                job.idempotency_key,
                job.fingerprint,
            )
            number = shapes.get(shape)
            if number is None:
                number = shapes[shape] = len(shapes) + 1
            tail += (job.id, job.payload, number)
        args: list[Any] = [
            k.job_prefix,
            k.idem_prefix,
            int(self.config.idempotency_ttl_s * 1000),
            NOTIFY_CAP,
            len(shapes),
        ]
        for typ, retries, timeout, delay_ms, run_at_ms, key, fingerprint in shapes:
            args += (typ, retries, repr(float(timeout)), delay_ms, run_at_ms, key, fingerprint)
        args += tail
        return [k.queued, k.scheduled, k.notify, k.stats], args

    def _pack_enqueue(self, queue: str, jobs: Sequence[NewJob]) -> bytes:
        keys, args = self._enqueue_args(queue, jobs)
        return pack(("EVALSHA", self.scripts.enqueue.sha, len(keys), *keys, *args))

    @staticmethod
    def _collect(
        raw: list[Any],
        indexes: list[int],
        results: list[tuple[str, str, bool, str, int] | None],
        jobs: Sequence[NewJob],
    ) -> None:
        now = int(raw[0])
        for index, item in zip(indexes, raw[1:], strict=True):
            if isinstance(item, list):  # an existing job: id, status, fingerprint
                results[index] = (_s(item[0]), _s(item[1]), True, _s(item[2]), now)
            else:
                job = jobs[index]
                status = _STATUS.get(item) or _s(item)
                results[index] = (job.id, status, False, job.fingerprint, now)

    # -- worker side ----------------------------------------------------------------------

    async def reserve(
        self,
        requests: Sequence[tuple[str, int]],
        *,
        lease_ms: int,
        worker_id: str,
        request_id: str | None = None,
    ) -> list[ReserveResult]:
        """For each ``(queue, count)``: recover, promote, and lease up to ``count`` jobs.

        All queues go in one round trip. The call carries a request id (a fresh one unless
        given): a call repeated with the same id after its reply was lost - by the client's
        retry, or by the caller passing the id again - gets the jobs the first call leased.
        """
        request_id = request_id or uuid.uuid4().hex
        if len(requests) == 1:
            queue, count = requests[0]
            raw = await self._reserve_call(queue, count, lease_ms, worker_id, None, request_id)
            return [self._parse_reserve(queue, raw)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue, count in requests:
                await self._reserve_call(queue, count, lease_ms, worker_id, pipe, request_id)
            replies = await pipe.execute()
        return [
            self._parse_reserve(queue, raw)
            for (queue, _), raw in zip(requests, replies, strict=True)
        ]

    async def _reserve_call(
        self, queue: str, count: int, lease_ms: int, worker_id: str, pipe: Any, request_id: str
    ) -> Any:
        k = self.keys(queue)
        keys = [
            k.queued,
            k.scheduled,
            k.retry,
            k.active,
            k.failed,
            k.stats,
            k.notify,
            k.token,
            k.completed,
            k.reserve_record(worker_id),
        ]
        args: list[Any] = [
            k.job_prefix,
            count,
            lease_ms,
            worker_id,
            self.config.max_lost_leases,
            int(self.config.failed_ttl_s * 1000),
            NOTIFY_CAP,
            int(self.config.completed_ttl_s * 1000),
            request_id,
        ]
        return await self.scripts.reserve(keys=keys, args=args, client=pipe)

    @staticmethod
    def _parse_reserve(queue: str, raw: list[Any]) -> ReserveResult:
        next_wake = int(raw[1])
        result = ReserveResult(
            now_ms=int(raw[0]), next_wake_ms=next_wake if next_wake >= 0 else None
        )
        n_recovered = int(raw[2])
        pos = 3
        for _ in range(n_recovered):
            result.recovered.append(
                Recovered(_s(raw[pos]), queue, _s(raw[pos + 2]), _s(raw[pos + 1]))
            )
            pos += 3
        jobs = result.jobs
        for at in range(pos, len(raw) - 9, 10):
            fields = raw[at : at + 10]
            try:
                job_id, token, job_type, payload, attempt, retries, timeout, enq, fails, lost = (
                    fields
                )
                job = ReservedJob(
                    job_id.decode(),
                    queue,
                    str(int(token)),
                    job_type.decode(),
                    payload,
                    int(attempt),
                    int(retries),
                    float(timeout),
                    int(enq),
                    int(fails),
                    int(lost),
                )
            except (AttributeError, TypeError, ValueError):
                job = _reserved_job_leniently(queue, fields)
            jobs.append(job)
        return result

    async def renew(
        self, leases: dict[str, list[tuple[str, str]]], *, lease_ms: int
    ) -> dict[str, list[str]]:
        """Extend leases ``{queue: [(job_id, token)]}``; returns the ids each queue lost."""
        queues = [q for q, items in leases.items() if items]
        if not queues:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                k = self.keys(queue)
                args: list[Any] = [k.job_prefix, lease_ms]
                for job_id, token in leases[queue]:
                    args += (job_id, token)
                await self.scripts.renew(keys=[k.active], args=args, client=pipe)
            replies = await pipe.execute()
        return {q: [_s(x) for x in raw] for q, raw in zip(queues, replies, strict=True) if raw}

    async def finish(self, ops: Mapping[str, Sequence[FinishOp]]) -> dict[str, list[str]]:
        """Apply outcomes ``{queue: [op]}`` in one round trip; returns outcomes per queue.

        A queue's ops travel as one MessagePack argument (the script unpacks it), so a batch
        costs one argument to encode and send rather than five per op.
        """
        queues = [q for q, items in ops.items() if items]
        if not queues:
            return {}
        if len(queues) == 1:
            queue = queues[0]
            raw = await self._finish_call(queue, ops[queue], None)
            return {queue: [_s(x) for x in raw[1:]]}
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                await self._finish_call(queue, ops[queue], pipe)
            replies = await pipe.execute()
        return {q: [_s(x) for x in raw[1:]] for q, raw in zip(queues, replies, strict=True)}

    async def _finish_call(self, queue: str, ops: Sequence[FinishOp], pipe: Any) -> Any:
        k = self.keys(queue)
        args: list[Any] = [
            k.job_prefix,
            int(self.config.completed_ttl_s * 1000),
            int(self.config.failed_ttl_s * 1000),
            NOTIFY_CAP,
            _OPS_ENCODER.encode([_wire_op(op) for op in ops]),
        ]
        keys = [k.active, k.queued, k.retry, k.completed, k.failed, k.stats, k.notify]
        return await self.scripts.finish(keys=keys, args=args, client=pipe)

    async def wait_for_work(self, blocking: Redis, queues: Sequence[str], timeout_s: float) -> bool:
        """Block on the queues' wake-up lists (on a dedicated connection); True when woken."""
        keys = [self.keys(q).notify for q in queues]
        reply = await blocking.blpop(keys, timeout=max(0.01, round(timeout_s, 3)))
        return reply is not None

    async def audit(
        self, queue: str, cursor: int, *, count: int = 1000, max_list: int = 10_000
    ) -> tuple[int, list[tuple[str, str]]]:
        """One step of the consistency sweep: SCAN up to ``count`` keys from ``cursor`` for
        this queue's job records and repair the ones outside their status's index.

        Returns the next cursor (0: the pass is complete) and the ``(id, status)`` repaired.
        """
        k = self.keys(queue)
        cursor, names = await self.redis.scan(cursor, match=k.job_prefix + "*", count=count)
        ids = [_s(n)[len(k.job_prefix) :] for n in names]
        repaired: list[tuple[str, str]] = []
        if ids:
            keys = [k.queued, k.scheduled, k.retry, k.active, k.stats, k.notify]
            raw = await self.scripts.audit(keys=keys, args=[k.job_prefix, max_list, *ids])
            repaired = [(_s(raw[i]), _s(raw[i + 1])) for i in range(0, len(raw), 2)]
        return int(cursor), repaired

    async def heartbeat(self, worker_id: str, advert: bytes, ttl_s: int) -> None:
        """Advertise a live worker for ``ttl_s`` and forget workers silent for longer.

        The registry is stamped with Redis ``TIME`` (one script on the registry key) so
        workers whose clocks disagree never evict each other; the advert expires by itself.
        """
        # Two plain calls, not a pipeline: a script in a redis-py pipeline costs an extra
        # SCRIPT EXISTS every time, and an idle worker's commands are what this path costs.
        await self.redis.set(self.globals.worker(worker_id), advert, ex=ttl_s)
        await self.scripts.heartbeat(keys=[self.globals.workers], args=[worker_id, ttl_s * 1000])

    # -- operating (the reads are in ReadModel, workqueue/broker/reads.py) -----------------

    async def requeue_failed(self, queue: str, job_ids: Sequence[str]) -> list[str]:
        """Send failed jobs back to their queue; returns the ids that were requeued."""
        if not job_ids:
            return []
        k = self.keys(queue)
        raw = await self.scripts.requeue_failed(
            keys=[k.failed, k.queued, k.notify], args=[k.job_prefix, *job_ids]
        )
        return [_s(x) for x in raw]


def _reserved_job_leniently(queue: str, fields: list[Any]) -> ReservedJob:
    """A reserved job from a record with odd field values (they read as 0)."""
    payload = fields[3]
    return ReservedJob(
        id=_s(fields[0]),
        queue=queue,
        token=_s(fields[1]),
        type=_s(fields[2]),
        payload=payload if isinstance(payload, bytes) else str(payload).encode(),
        attempt=_int(fields[4]),
        retries=_int(fields[5]),
        timeout=_float(fields[6]),
        enqueued_at_ms=_int(fields[7]),
        failures=_int(fields[8]),
        lost=_int(fields[9]),
    )


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0
