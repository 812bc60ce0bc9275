"""The read model: every figure, listing and look-up the operators and monitors read.

:class:`ReadModel` is mixed into :class:`workqueue.broker.broker.Broker` and implements the
"operating and reading" section of :class:`workqueue.broker.contract.BrokerAPI`. ``/metrics``,
``workqueue stats``, ``workqueue queues`` and ``workqueue jobs`` all read through it, so they
cannot disagree, and nothing outside ``workqueue.broker`` touches Redis.

Costs (round trips; a pipeline is one):

- :meth:`ReadModel.figures`: 3 whatever the number of queues (``SMEMBERS`` of the queue
  registry; one pipeline of 9 commands per queue plus ``TIME``; one pipeline of one ``HGET``
  per queue that has a job waiting, skipped when none has).

On Redis Cluster the client is redis-py's cluster client: a pipeline is split into one pipeline
per master, sent concurrently (so each round trip above is one concurrent round trip per master
holding one of the queues), every command names keys of one slot (no ``MGET``, no multi-key
``DEL``), and ``TIME`` is asked of one node beside the figures pipeline, not inside it.
- :meth:`ReadModel.workers`: 2 (``ZRANGE`` of the registry, then one pipelined ``GET`` per
  worker: no multi-key ``MGET``, which Redis Cluster refuses across slots).
- :meth:`ReadModel.list_jobs`, :meth:`ReadModel.locate_jobs`, :meth:`ReadModel.get_job`: the
  registry (when no queue is given), then one or two pipelines.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec
from redis.asyncio import Redis

from workqueue.broker.cluster import is_cluster
from workqueue.broker.contract import (
    JobLocation,
    PurgeStep,
    QueueFigures,
    SystemFigures,
    WorkerAdvert,
)
from workqueue.broker.keys import GlobalKeys, QueueKeys
from workqueue.broker.levels import QUEUED_FIGURES, QUEUED_HEAD
from workqueue.errors import JobNotFound
from workqueue.job import Attempt, JobInfo, Status, ms_to_datetime

if TYPE_CHECKING:
    from workqueue.broker.broker import BrokerConfig
    from workqueue.broker.scripts import Scripts

__all__ = ["FINISHED", "LISTABLE", "ReadModel", "job_info"]

#: the statuses :meth:`ReadModel.list_jobs` reads, each from its own index
LISTABLE = tuple(s.value for s in Status)
#: the statuses whose records :meth:`ReadModel.purge_finished` deletes
FINISHED = (Status.COMPLETED.value, Status.FAILED.value, Status.CANCELLED.value)


class _AdvertWire(msgspec.Struct):
    """An advert as stored: every field optional, so an advert from another version (or a
    hand-written one) still counts for the types it names."""

    host: str = ""
    pid: int = 0
    queues: list[str] = msgspec.field(default_factory=list)
    types: list[str] = msgspec.field(default_factory=list)
    concurrency: int = 0
    started_at: float = 0.0


_ADVERT = msgspec.json.Decoder(_AdvertWire)

#: commands per queue in the figures pipeline (see :meth:`ReadModel._queue_commands`)
_PER_QUEUE = 9


def _s(value: Any) -> str:
    # "replace": a tampered record's bytes must not crash the worker or a reader
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _time_ms(reply: Any) -> int:
    """Redis ``TIME`` (seconds, microseconds) in milliseconds."""
    now_s, now_us = reply
    return int(now_s) * 1000 + int(now_us) // 1000


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _index(k: QueueKeys, status: str) -> str:
    """The index that holds the jobs of one status."""
    return {
        "scheduled": k.scheduled,
        "queued": k.queued,
        "active": k.active,
        "retrying": k.retry,
        "completed": k.completed,
        "failed": k.failed,
        "cancelled": k.cancelled,
    }[status]


class ReadModel:
    """Reads and operator actions on one Redis; needs only the attributes declared below."""

    redis: Redis
    config: BrokerConfig
    globals: GlobalKeys
    scripts: Scripts

    if TYPE_CHECKING:

        def keys(self, queue: str) -> QueueKeys:
            """The key names of one queue (the broker's)."""
            ...

    # -- registries --------------------------------------------------------------------------

    async def known_queues(self) -> list[str]:
        """Every queue that has been enqueued to or configured, sorted."""
        members = await self.redis.smembers(self.globals.queues)
        return sorted(_s(m) for m in members)

    async def workers(self) -> list[WorkerAdvert]:
        """The live workers' adverts, by id; ``last_seen_ms`` is the last heartbeat.

        A worker in the registry whose advert has expired (or is not a JSON object of the
        advert's fields) is left out; missing fields read as empty.
        """
        entries: list[Any] = await self.redis.zrange(self.globals.workers, 0, -1, withscores=True)
        if not entries:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for member, _ in entries:
                pipe.get(self.globals.worker(_s(member)))
            adverts = await pipe.execute()
        found: list[WorkerAdvert] = []
        for (member, seen), raw in zip(entries, adverts, strict=True):
            if not raw:
                continue
            try:
                wire = _ADVERT.decode(raw)
            except msgspec.DecodeError:  # not JSON, or a field of the wrong type
                continue
            found.append(
                WorkerAdvert(
                    id=_s(member),
                    host=wire.host,
                    pid=wire.pid,
                    queues=wire.queues,
                    types=wire.types,
                    concurrency=wire.concurrency,
                    started_at=wire.started_at,
                    last_seen_ms=int(seen),
                )
            )
        return sorted(found, key=lambda a: a.id)

    async def advertised_types(self) -> set[str]:
        """The job types the live workers advertise."""
        return {t for advert in await self.workers() for t in advert.types}

    # -- figures -----------------------------------------------------------------------------

    async def figures(self, queues: Sequence[str] = ()) -> SystemFigures:
        """Every known queue's figures (plus ``queues``), in 2 round trips."""
        names = sorted(set(await self.known_queues()) | set(queues))
        return await self.queue_figures(names)

    async def queue_stats(self, queue: str) -> dict[str, int]:
        """One queue's counters and index sizes as a flat dict (tests and tools)."""
        row = (await self.queue_figures([queue])).queues[0]
        return {
            **row.counters,
            "queued": row.queued,
            "active": row.running,
            "scheduled": row.scheduled,
            "retrying": row.retrying,
            "completed_kept": row.completed_kept,
            "failed_kept": row.failed_kept,
        }

    async def queue_figures(self, names: Sequence[str]) -> SystemFigures:
        """These queues' figures only, in order: one pipeline of 9 commands per queue (one of
        them a small EVAL over the priority levels giving the depth and the oldest waiting
        job's ``enqueued_at``) and ``TIME``."""
        clustered = is_cluster(self.redis)
        async with self.redis.pipeline(transaction=False) as pipe:
            for q in names:
                self._queue_commands(pipe, self.keys(q))
            if clustered:
                # a cluster pipeline is one pipeline per master, all at once; TIME names no
                # key (no master to send it to in a pipeline): asked of one node, meanwhile
                replies, now_ms = await asyncio.gather(pipe.execute(), self.server_time_ms())
            else:
                pipe.time()
                replies = await pipe.execute()
                now_ms = _time_ms(replies[-1])
        rows: list[QueueFigures] = []
        for at, q in enumerate(names):
            stats, waiting, active, scheduled, retrying, completed, failed, cancelled, paused = (
                replies[at * _PER_QUEUE : (at + 1) * _PER_QUEUE]
            )
            queued, oldest_ms = (_int(v) for v in waiting)
            row = QueueFigures(
                queue=q,
                queued=queued,
                running=int(active),
                scheduled=int(scheduled),
                retrying=int(retrying),
                completed_kept=int(completed),
                failed_kept=int(failed),
                cancelled_kept=int(cancelled),
                paused=paused == b"1",
                # a corrupt counter reads as 0 (the scripts restart it from 0 the same way)
                counters={_s(k): _int(v) for k, v in stats.items()},
            )
            if oldest_ms > 0:
                row.oldest_waiting_seconds = max(0.0, (now_ms - oldest_ms) / 1000)
            rows.append(row)
        return SystemFigures(now_ms=now_ms, queues=rows)

    @staticmethod
    def _queue_commands(pipe: Any, k: QueueKeys) -> None:
        """One queue's :data:`_PER_QUEUE` figure commands, all on keys of its slot."""
        pipe.hgetall(k.stats)
        pipe.eval(QUEUED_FIGURES, 1, k.queued)  # every priority level: depth and oldest age
        pipe.zcard(k.active)
        pipe.zcard(k.scheduled)
        pipe.zcard(k.retry)
        pipe.zcard(k.completed)
        pipe.zcard(k.failed)
        pipe.zcard(k.cancelled)
        pipe.hget(k.settings, "paused")

    async def server_time_ms(self) -> int:
        """Redis's clock, ms."""
        return _time_ms(await self.redis.time())

    # -- jobs ----------------------------------------------------------------------------------

    async def _queues(self, queue: str | None) -> list[str]:
        return [queue] if queue else await self.known_queues()

    async def get_job(self, job_id: str, queue: str | None = None) -> JobInfo:
        """The job with this id (searching every known queue unless ``queue`` is given)."""
        queues = await self._queues(queue)
        if queues:
            async with self.redis.pipeline(transaction=False) as pipe:
                for q in queues:
                    pipe.hgetall(self.keys(q).job(job_id))
                replies = await pipe.execute()
            for q, record in zip(queues, replies, strict=True):
                if record:
                    return job_info(job_id, q, record)
        raise JobNotFound(job_id)

    async def list_jobs(
        self, status: str, queue: str | None = None, limit: int = 50
    ) -> list[JobInfo]:
        """Up to ``limit`` jobs in ``status`` (of one queue, or of every known queue).

        Queued jobs come oldest first (the order they will run in); the other states newest
        first by their index score (finish time, due time or lease deadline). Two pipelines:
        the indexes, then the records.
        """
        if status not in LISTABLE:
            raise ValueError(f"status must be one of {', '.join(LISTABLE)}")
        if limit <= 0:
            return []
        queues = await self._queues(queue)
        if not queues:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                index = _index(self.keys(q), status)
                if status == "queued":
                    pipe.eval(QUEUED_HEAD, 1, index, limit)  # H4: every priority level
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
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, _, q, job_id in found:
                pipe.hgetall(self.keys(q).job(job_id))
            records = await pipe.execute()
        return [
            job_info(job_id, q, record)
            for (_, _, q, job_id), record in zip(found, records, strict=True)
            if record
        ]

    async def locate_jobs(
        self, job_ids: Sequence[str], queue: str | None = None
    ) -> list[JobLocation]:
        """Where these jobs are: one pipelined ``HMGET status type`` per (id, queue).

        In the order asked, duplicates once; an id with no record in any queue is left out.
        """
        wanted = list(dict.fromkeys(job_ids))
        queues = await self._queues(queue)
        if not wanted or not queues:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in wanted:
                for q in queues:
                    pipe.hmget(self.keys(q).job(job_id), "status", "type")
            replies = await pipe.execute()
        found: list[JobLocation] = []
        for i, job_id in enumerate(wanted):
            for j, q in enumerate(queues):
                status, job_type = replies[i * len(queues) + j]
                if status is not None:
                    found.append(JobLocation(job_id, q, _s(status), _s(job_type or b"")))
                    break
        return found

    async def finished_ids(
        self, queue: str, status: str, *, until_ms: int, offset: int = 0, count: int = 500
    ) -> list[str]:
        """Ids of a finished index that finished at or before ``until_ms``, oldest first."""
        if status not in FINISHED:
            raise ValueError(f"status must be one of {', '.join(FINISHED)}")
        index = _index(self.keys(queue), status)
        members = await self.redis.zrangebyscore(index, "-inf", until_ms, start=offset, num=count)
        return [_s(m) for m in members]

    async def purge_finished(
        self, queue: str, status: str, *, batch: int = 500, cutoff_ms: int | None = None
    ) -> PurgeStep:
        """Delete up to ``batch`` finished records of one status (``purge.lua``, atomic),
        with their ledger entries and idempotency keys.

        Only records whose status is the index's own are deleted; unfinished jobs are never
        touched. The first call fixes the cutoff (Redis time); pass it on to the next calls.
        """
        if status not in FINISHED:
            raise ValueError(f"status must be one of {', '.join(FINISHED)}")
        k = self.keys(queue)
        cutoff: int | str = "" if cutoff_ms is None else cutoff_ms
        raw = await self.scripts.purge(
            keys=[_index(k, status), k.ledger],
            args=[k.job_prefix, k.idem_prefix, status, batch, cutoff],
        )
        return PurgeStep(cutoff_ms=int(raw[0]), examined=int(raw[1]), deleted=int(raw[2]))


def job_info(job_id: str, queue: str, record: dict[bytes, bytes]) -> JobInfo:
    """Build a :class:`JobInfo` from a job hash (odd field values read as empty or 0)."""
    f = {_s(k): v for k, v in record.items()}

    def ms(name: str) -> int | None:
        value = f.get(name)
        try:
            return int(value) if value not in (None, b"") else None
        except ValueError:  # a tampered or corrupt record: show no time rather than fail
            return None

    result: Any = None
    raw_result = f.get("result")
    if raw_result:
        try:
            result = msgspec.json.decode(raw_result)
        except msgspec.DecodeError:
            result = None
    error = f.get("error")
    progress: Any = None
    raw_progress = f.get("progress")
    if raw_progress:
        try:
            progress = msgspec.json.decode(raw_progress)
        except msgspec.DecodeError:
            progress = None
    return JobInfo(
        id=job_id,
        type=_s(f.get("type", b"")),
        queue=queue,
        status=_s(f.get("status", b"")),
        attempts=_int(f.get("attempts")),
        retries=_int(f.get("retries")),
        enqueued_at=ms_to_datetime(ms("enqueued_at")),
        started_at=ms_to_datetime(ms("started_at")),
        finished_at=ms_to_datetime(ms("finished_at")),
        result=result,
        error=_s(error) if error else None,
        failures=_int(f.get("failures")),
        lost_leases=_int(f.get("lost")),
        run_at=ms_to_datetime(ms("run_at")),
        progress=progress,
        history=_history(f),
    )


class _AttemptWire(msgspec.Struct):
    """A history entry as the prelude writes it (times in ms); odd entries read leniently."""

    attempt: int | float = 0
    worker: str = ""
    started_at: int | float | None = None
    finished_at: int | float | None = None
    outcome: str = ""
    error: str | None = None


_HISTORY = msgspec.json.Decoder(list[_AttemptWire])


#: the most attempts a job's history shows (the prelude's HISTORY_MAX)
HISTORY_MAX = 25


def _history(f: dict[str, Any]) -> list[Attempt]:
    """A record's attempt history: the ``history`` field (the attempts that ended otherwise
    than by success, see control.lua), then the current attempt as the record itself states
    it (``attempts``, ``worker``, ``started_at``): ``running`` while active, ``succeeded``
    once completed. An unreadable field reads as empty."""
    entries: list[_AttemptWire] = []
    raw = f.get("history")
    if raw:
        try:
            entries = _HISTORY.decode(raw)
        except msgspec.DecodeError:
            entries = []
    shown = [
        Attempt(
            attempt=int(e.attempt),
            worker=e.worker,
            started_at=ms_to_datetime(int(e.started_at) if e.started_at is not None else None),
            finished_at=ms_to_datetime(int(e.finished_at) if e.finished_at is not None else None),
            outcome=e.outcome,
            error=e.error,
        )
        for e in entries
    ]
    current = _int(f.get("attempts"))
    status = _s(f.get("status", b""))
    if current >= 1 and status in ("active", "completed"):
        last = shown[-1] if shown else None
        if last is None or last.attempt != current or last.outcome == "running":
            if last is not None and last.attempt == current:
                shown.pop()
            done = status == "completed"
            shown.append(
                Attempt(
                    attempt=current,
                    worker=_s(f.get("worker", b"")),
                    started_at=ms_to_datetime(_ms_field(f.get("started_at"))),
                    finished_at=ms_to_datetime(_ms_field(f.get("finished_at"))) if done else None,
                    outcome="succeeded" if done else "running",
                )
            )
    return shown[-HISTORY_MAX:]


def _ms_field(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, b"") else None
    except ValueError:
        return None
