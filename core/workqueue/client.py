"""Enqueue from Python without the HTTP hop: :class:`Client` (asyncio) and :class:`SyncClient`.

The producer's routes use the same :func:`prepare_task` validation and the same broker call,
so there is one code path for enqueueing.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import repeat
from os import urandom as _urandom
from typing import Any

import msgspec

from workqueue import clock, tracing
from workqueue.broker import queue_control
from workqueue.broker.broker import Broker, BrokerConfig
from workqueue.broker.connection import create_redis
from workqueue.broker.contract import CancelResult, EnqueueResult
from workqueue.broker.placement import Placer
from workqueue.broker.queue_control import QueueOverview
from workqueue.errors import (
    IdempotencyConflict,
    PayloadValidationError,
    TaskValidationError,
    UnknownJobTypeError,
)
from workqueue.flow import apply_flow
from workqueue.job import EnqueuedJob, JobInfo, NewJob, ms_to_datetime
from workqueue.jobtypes import DEFAULT_RETRIES, DEFAULT_TIMEOUT_SECONDS, NAME_PATTERN, JobType
from workqueue.limits import check_limit_key
from workqueue.log import EventBatch
from workqueue.registry import Registry
from workqueue.schema import PAYLOAD_ROOT, validate_payload

__all__ = [
    "Client",
    "Limits",
    "SyncClient",
    "TaskSpec",
    "flush_event_lines",
    "number_text",
    "prepare_task",
]


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds applied to every task before it reaches Redis."""

    max_retries: int = 100
    max_timeout_s: float = 24 * 3600
    max_delay_s: float = 365 * 24 * 3600
    max_payload_bytes: int = 512 * 1024
    max_idempotency_key: int = 256


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One task as an application states it (validated by :func:`prepare_task`)."""

    type: str
    payload: Any = None
    retries: int | None = None
    queue: str = "default"
    delay: float | None = None
    run_at: datetime | str | None = None
    timeout: float | None = None
    idempotency_key: str | None = None
    #: 0-9, higher starts first (SPEC 12)
    priority: int | None = 0
    #: at most one unfinished job per queue, type and canonical payload (SPEC 12)
    unique: bool | None = False
    #: limits of the type apply per (type, limit_key) (SPEC 12; workqueue.limits)
    limit_key: str | None = None


def number_text(value: float) -> str:
    """A number as a person writes it in a message: ``31536000``, ``0.001``, never
    ``3.1536e+07``."""
    if float(value).is_integer():
        return str(int(value))
    return format(value, "f").rstrip("0") if abs(value) >= 1e-6 else repr(value)


def _number(field: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TaskValidationError(field, "must be a number")
    if not math.isfinite(value) or not low <= value <= high:
        raise TaskValidationError(
            field, f"must be between {number_text(low)} and {number_text(high)}"
        )
    return float(value)


def prepare_task(
    spec: TaskSpec, registry: Registry, limits: Limits, known_remote: Iterable[str] = ()
) -> NewJob:
    """Validate a task and turn it into a :class:`NewJob` (raises TaskValidationError)."""
    job = _prepare(
        registry,
        limits,
        known_remote,
        spec.type,
        spec.payload,
        spec.retries,
        spec.queue,
        spec.delay,
        spec.run_at,
        spec.timeout,
        spec.idempotency_key,
        spec.limit_key,
    )
    return apply_flow(job, spec.priority, spec.unique)


#: names that passed NAME_PATTERN (bounded; a cache, not a list of allowed names)
_GOOD_NAMES: set[str] = {"default"}
_GOOD_NAMES_MAX = 4096


def _check_name(field: str, value: Any) -> None:
    if type(value) is str and value in _GOOD_NAMES:
        return
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise TaskValidationError(field, "must be 1-128 characters of A-Za-z0-9_.:-")
    if len(_GOOD_NAMES) >= _GOOD_NAMES_MAX:
        _GOOD_NAMES.clear()
    _GOOD_NAMES.add(value)


def _encode_payload(job_type: JobType | None, payload: Any, limits: Limits) -> bytes:
    """The payload validated against the job type's schema (when the type is installed) and
    encoded as JSON."""
    if payload is None:
        payload = {}
    elif not isinstance(payload, dict):
        raise TaskValidationError("payload", "must be a JSON object")
    if job_type is not None:
        schema = job_type.payload_schema
        if schema is not None:
            payload = validate_payload(schema, payload)
        elif not all(map(isinstance, payload, repeat(str))):
            raise PayloadValidationError(PAYLOAD_ROOT, "object keys must be strings")
    try:
        encoded = msgspec.json.encode(payload)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TaskValidationError("payload", f"is not JSON-serialisable: {exc}") from None
    if len(encoded) > limits.max_payload_bytes:
        raise TaskValidationError(
            "payload", f"is {len(encoded)} bytes; the limit is {limits.max_payload_bytes}"
        )
    return encoded


def _schedule(delay: Any, run_at: Any, limits: Limits) -> tuple[int, int]:
    """``(delay_ms, run_at_ms)``, -1 for the one not given."""
    if delay is not None:
        if run_at is not None:
            raise TaskValidationError("delay", "give either delay or run_at, not both")
        return int(_number("delay", delay, 0, limits.max_delay_s) * 1000), -1
    if run_at is not None:
        return -1, _run_at_ms(run_at)
    return -1, -1


def _prepare(
    registry: Registry,
    limits: Limits,
    known_remote: Iterable[str],
    type: str,
    payload: Any,
    retries: int | None,
    queue: str,
    delay: float | None,
    run_at: datetime | str | None,
    timeout: float | None,
    idempotency_key: str | None,
    limit_key: str | None = None,
) -> NewJob:
    """:func:`prepare_task` on the fields themselves (the hot path builds no TaskSpec)."""
    _check_name("type", type)
    _check_name("queue", queue)
    job_type = registry.get(type)
    if job_type is None and type not in known_remote:
        remote = set(known_remote)
        raise UnknownJobTypeError(type, [*registry.names(), *remote])
    encoded = _encode_payload(job_type, payload, limits)
    if retries is None:
        retries = job_type.retries if job_type else DEFAULT_RETRIES
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise TaskValidationError("retries", "must be an integer")
    if not 0 <= retries <= limits.max_retries:
        raise TaskValidationError("retries", f"must be between 0 and {limits.max_retries}")
    if timeout is None:
        timeout = job_type.timeout if job_type else DEFAULT_TIMEOUT_SECONDS
    timeout = _number("timeout", timeout, 0.001, limits.max_timeout_s)
    delay_ms, run_at_ms = _schedule(delay, run_at, limits)
    fingerprint = key = ""
    if idempotency_key:
        key = idempotency_key
        if len(key) > limits.max_idempotency_key or any(c in key for c in "\r\n\0"):
            raise TaskValidationError("idempotency_key", "too long or contains control characters")
        shape: list[Any] = [type, queue, retries, timeout, delay_ms, run_at_ms]
        if limit_key:
            shape.append(limit_key)
        fingerprint = hashlib.sha256(msgspec.json.encode(shape) + encoded).hexdigest()[:32]
    return NewJob(
        id=_urandom(16).hex(),
        type=type,
        queue=queue,
        payload=encoded,
        retries=retries,
        timeout=timeout,
        delay_ms=delay_ms,
        run_at_ms=run_at_ms,
        idempotency_key=key,
        fingerprint=fingerprint,
        limit_key=_limit_key(limit_key),
    )


def _limit_key(value: Any) -> str:
    """A task's limit_key checked (see workqueue.limits); '' when none."""
    if value is None:
        return ""
    try:
        return check_limit_key(value)
    except ValueError as exc:
        raise TaskValidationError("limit_key", str(exc)) from None


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (any year, no datetime limits)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _rfc3339_ms(text: str) -> int:
    """Milliseconds since the epoch of an RFC 3339 date-time (section 5.6, any case of T/Z,
    any fraction, leap second 60, years 0000-9999); raises ValueError for anything else."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(text)
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    month_days = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    if not 1 <= month <= 12 or not 1 <= day <= month_days[month - 1]:
        raise ValueError(text)
    if hour > 23 or minute > 59 or second > 60:
        raise ValueError(text)
    offset = 0
    if match.group(9):
        off_hour, off_minute = int(match.group(10)), int(match.group(11))
        if off_hour > 23 or off_minute > 59:
            raise ValueError(text)
        offset = (off_hour * 60 + off_minute) * 60 * (1 if match.group(9) == "+" else -1)
    seconds = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
    fraction = match.group(7)
    millis = int((fraction[1:] + "000")[:3]) if fraction else 0
    return (seconds - offset) * 1000 + millis


def _run_at_ms(value: datetime | str) -> int:
    """Epoch milliseconds of ``run_at`` (a time before 1970 is due at once: 0)."""
    if isinstance(value, str):
        try:
            return max(_rfc3339_ms(value), 0)
        except ValueError:
            raise TaskValidationError("run_at", "must be an RFC 3339 time") from None
    if not isinstance(value, datetime):
        raise TaskValidationError("run_at", "must be an RFC 3339 time")
    offset = value.utcoffset()
    if offset is None:
        raise TaskValidationError("run_at", "must carry a UTC offset (e.g. Z)")
    days = _days_from_civil(value.year, value.month, value.day)
    seconds = days * 86400 + value.hour * 3600 + value.minute * 60 + value.second
    millis = seconds * 1000 + value.microsecond // 1000 - offset // timedelta(milliseconds=1)
    return max(millis, 0)


#: how long the job types live workers advertise are reused before they are read again
ADVERT_CACHE_SECONDS = 5.0


#: "enqueued" lines wait at most this long to be handed to loguru in one call...
EVENT_WRITE_SECONDS = 0.05
#: ...or until this many are waiting
EVENT_WRITE_LINES = 2000


class _EnqueueEvents:
    """The "enqueued" event of every job written through a :class:`Client` (the producer's
    routes, the CLI, an application), one line per job and never a payload value, cheaply:
    lines are rendered at once and handed to loguru in batches, at most every
    :data:`EVENT_WRITE_SECONDS` (a loguru call costs more CPU than an enqueue: with the event
    log's writer thread, a call per sequential ``enqueue`` cost 160 µs of a 260 µs job).
    :meth:`flush` writes what waits: :meth:`Client.aclose`, every :class:`SyncClient` call and
    the process's exit call it."""

    def __init__(self) -> None:
        self._batch = EventBatch()
        self._timer: asyncio.TimerHandle | None = None
        #: the loop of the pending timer (a client may be used from several loops in turn,
        #: e.g. ``asyncio.run`` per call: a timer on a loop that stopped never fires)
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        atexit.register(self.flush)

    def add(self, jobs: Iterable[EnqueuedJob]) -> None:
        batch = self._batch
        for job in jobs:
            message = "duplicate (idempotency key or unique)" if job.duplicate else "enqueued"
            batch.add("INFO", job.id, job.type, None, message, (("queue", job.queue),))
        if len(batch) >= EVENT_WRITE_LINES:
            self.flush()
            return
        loop = asyncio.get_running_loop()
        if self._timer is None or self._timer_loop is not loop:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_later(EVENT_WRITE_SECONDS, self.flush)
            self._timer_loop = loop

    def flush(self) -> None:
        """Hand every waiting line to loguru now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_loop = None
        if len(self._batch):
            self._batch.write()


_events = _EnqueueEvents()


def flush_event_lines() -> None:
    """Hand the waiting "enqueued" lines to loguru now (``Client.aclose`` does it too); for
    code that stops its event loop and its logging without closing the client."""
    _events.flush()


class Client:
    """The asyncio client of SPEC section 3.

    Concurrent :meth:`enqueue` calls of one client share round trips: a call made while
    another write is in flight waits for it to finish and then goes out with every call that
    arrived meanwhile, as one pipelined write (one script call per queue and
    :data:`~workqueue.broker.broker.ENQUEUE_CHUNK` jobs). A call made when nothing is in flight
    is written at once (no timer, no waiting for company). Each call is validated on its own
    and gets its own answer or its own error.
    """

    def __init__(
        self,
        broker: Broker,
        registry: Registry | None = None,
        limits: Limits | None = None,
        *,
        check_types: bool = True,
    ) -> None:
        self.broker = broker
        self.registry = registry if registry is not None else Registry.from_job_types([])
        self.limits = limits or Limits()
        #: when False, any well-formed type name is accepted (for clients without plugins)
        self.check_types = check_types
        #: (monotonic time read, types) of the last advert read
        self._adverts: tuple[float, set[str]] | None = None
        # the auto-batcher: jobs waiting for the write in flight to finish
        self._pending: list[tuple[NewJob, asyncio.Future[EnqueueResult]]] = []
        self._busy = False
        self._flusher: asyncio.Task[None] | None = None
        #: the partition of each new job (partitioned queues: see broker/placement.py)
        self._placer = Placer(broker.partitions, broker.config.idempotency_ttl_s)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        registry: Registry | None = None,
        config: BrokerConfig | None = None,
        check_types: bool | None = None,
    ) -> Client:
        """A client for a Redis URL; plugins are loaded for validation unless given."""
        if registry is None:
            from workqueue.registry import build_registry

            registry = build_registry()
        broker = Broker(create_redis(url), config)
        return cls(broker, registry, check_types=True if check_types is None else check_types)

    async def aclose(self) -> None:
        """Write the waiting event lines and close the Redis connections."""
        _events.flush()
        await self.broker.partitions.close()
        await self.broker.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def advertised_types(self, *, fresh: bool = False) -> set[str]:
        """Job types that live workers advertise in Redis, reused for
        :data:`ADVERT_CACHE_SECONDS` unless ``fresh`` (a producer lacking a job type would
        otherwise read every worker's advert on every enqueue: two round trips, O(workers))."""
        now = time.monotonic()
        cached = self._adverts
        if not fresh and cached is not None and now - cached[0] < ADVERT_CACHE_SECONDS:
            return cached[1]
        types = await self.broker.advertised_types()
        self._adverts = (now, types)
        return types

    async def _remote_types(self, types: Iterable[Any]) -> Iterable[str]:
        """The type names accepted beyond the registry: all of them without type checks, else
        those live workers advertise (one Redis read, only when a type is not installed)."""
        if not self.check_types:
            return {t for t in types if isinstance(t, str)}
        registry = self.registry
        wanted = {t for t in types if isinstance(t, str) and t not in registry}
        if not wanted:
            return ()
        known = await self.advertised_types()
        if not wanted <= known:  # a worker that just started: read again before refusing
            known = await self.advertised_types(fresh=True)
        return known

    async def enqueue(
        self,
        type: str,
        payload: Any = None,
        *,
        retries: int | None = None,
        queue: str = "default",
        delay: float | None = None,
        run_at: datetime | str | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        priority: int = 0,
        unique: bool = False,
        limit_key: str | None = None,
    ) -> EnqueuedJob:
        """Validate and enqueue one job (one round trip, shared with concurrent calls).

        ``priority`` 0-9: a higher one starts first; ``unique``: while an unfinished job of
        this queue, type and payload exists, that job is answered (``duplicate``) instead."""
        remote: Iterable[str] = ()
        if not self.check_types or (isinstance(type, str) and type not in self.registry):
            remote = await self._remote_types((type,))
        job = _prepare(
            self.registry,
            self.limits,
            remote,
            type,
            payload,
            retries,
            queue,
            delay,
            run_at,
            timeout,
            idempotency_key,
            limit_key,
        )
        job = apply_flow(job, priority, unique)
        answer = await self._answer(job, await self._write(job))
        _events.add((answer,))
        return answer

    async def enqueue_many(self, tasks: Sequence[TaskSpec | tuple[str, Any]]) -> list[EnqueuedJob]:
        """Validate all, then write all (all-or-nothing validation).

        The jobs go out in script calls of at most ``ENQUEUE_CHUNK`` jobs each, pipelined a
        few at a time; each call is atomic, so a failure part-way (Redis unreachable after the
        retries) can leave the earlier chunks written.
        """
        types = [t.type if isinstance(t, TaskSpec) else t[0] for t in tasks]
        remote = await self._remote_types(types)
        reg, limits = self.registry, self.limits
        jobs = [
            prepare_task(t, reg, limits, remote)
            if isinstance(t, TaskSpec)
            else _prepare(reg, limits, remote, t[0], t[1], None, "default", None, None, None, None)
            for t in tasks
        ]
        answers = await self._write_all(jobs)
        _events.add(answers)
        return answers

    async def enqueue_specs(self, specs: Sequence[TaskSpec]) -> list[EnqueuedJob]:
        """The one enqueue path: validation of every spec, then the writes."""
        remote = await self._remote_types([s.type for s in specs])
        jobs = [prepare_task(spec, self.registry, self.limits, remote) for spec in specs]
        answers = await self._write_all(jobs)
        _events.add(answers)
        return answers

    @tracing.traced_write_many  # OpenTelemetry: a PRODUCER span (no-op without the extra)
    async def _write_all(self, jobs: list[NewJob]) -> list[EnqueuedJob]:
        if len(jobs) == 1:
            return [await self._answer(jobs[0], await self._write(jobs[0]))]
        results = await self._enqueue_placed(jobs)
        answers = []
        moment_ms = -1
        moment = clock.now_datetime()
        for job, raw in zip(jobs, results, strict=True):
            if raw.duplicate and raw.id != job.id:
                answers.append(await self._answer(job, raw))
                continue
            if raw.enqueued_at_ms != moment_ms:
                moment_ms = raw.enqueued_at_ms
                moment = ms_to_datetime(moment_ms) or clock.now_datetime()
            answers.append(
                EnqueuedJob(raw.id, job.type, job.queue, raw.status, job.retries, moment, False)
            )
        return answers

    async def _answer(self, job: NewJob, raw: EnqueueResult) -> EnqueuedJob:
        job_id, status, fingerprint = raw.id, raw.status, raw.fingerprint
        duplicate = raw.duplicate
        # our own id already there: a write retried after a lost reply, still our job
        duplicate = duplicate and job_id != job.id
        if duplicate and job.idempotency_key and fingerprint != job.fingerprint:
            raise IdempotencyConflict(job_id)
        enqueued_at = ms_to_datetime(raw.enqueued_at_ms) or clock.now_datetime()
        if duplicate:
            info = await self.broker.get_job(job_id, job.queue)
            enqueued_at = info.enqueued_at or enqueued_at
            status = info.status
        return EnqueuedJob(job_id, job.type, job.queue, status, job.retries, enqueued_at, duplicate)

    # -- the auto-batcher ----------------------------------------------------------------------

    async def _enqueue_placed(self, jobs: list[NewJob]) -> list[EnqueueResult]:
        """Write jobs of logical queues, each into its partition (no Redis call to choose it
        while the queue's layout is cached: see broker/placement.py); a duplicate found in a
        partition of an earlier layout is that job's answer instead."""
        placer = self._placer
        placed: list[NewJob | EnqueueResult | None] = [placer.place_cached(j) for j in jobs]
        later = [i for i, job in enumerate(placed) if job is None]
        if later:
            found = await placer.place([jobs[i] for i in later])
            for i, job in zip(later, found, strict=True):
                placed[i] = job
        to_write = [job for job in placed if isinstance(job, NewJob)]
        written = iter(await self.broker.enqueue(to_write) if to_write else ())
        return [job if isinstance(job, EnqueueResult) else next(written) for job in placed]

    @tracing.traced_write_one  # OpenTelemetry: a PRODUCER span (no-op without the extra)
    async def _write(self, job: NewJob) -> EnqueueResult:
        """Write one job: at once when nothing is in flight, else with the next batch."""
        if self._busy:
            future: asyncio.Future[EnqueueResult] = asyncio.get_running_loop().create_future()
            self._pending.append((job, future))
            return await future
        self._busy = True
        try:
            (raw,) = await self._enqueue_placed([job])
        finally:
            self._next_batch()
        return raw

    def _next_batch(self) -> None:
        """After a write: hand the waiting jobs to a flusher task, or mark the client idle."""
        if self._pending:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        else:
            self._busy = False

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch = [(job, f) for job, f in self._pending if not f.done()]
                self._pending = []
                if not batch:
                    continue
                try:
                    results = await self._enqueue_placed([job for job, _ in batch])
                except asyncio.CancelledError:
                    for _, future in batch:
                        future.cancel()
                    raise
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), raw in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(raw)
        finally:
            for _, future in self._pending:
                future.cancel()
            self._pending = []
            self._busy = False
            self._flusher = None

    async def get_job(self, job_id: str) -> JobInfo:
        """The job's current record (raises JobNotFound)."""
        return await self.broker.get_job(job_id)

    async def cancel(self, job_id: str) -> CancelResult:
        """Cancel a job (SPEC 11): a queued, scheduled or retrying one is cancelled at once
        (outcome ``cancelled``); a running one is asked to stop (``cancelling``: it ends
        cancelled within a third of its lease); a finished one is left alone (``finished``).
        Raises JobNotFound for an unknown id."""
        return await self.broker.cancel(job_id)

    # -- queue control (H4: workqueue.broker.queue_control) -------------------------------

    async def queues(self) -> list[QueueOverview]:
        """Every known queue: depth per status, oldest waiting age, partitions, paused."""
        return await queue_control.overview(self.broker)

    async def pause_queue(self, queue: str) -> QueueOverview:
        """Pause a queue: it accepts jobs and starts none (running jobs finish)."""
        await queue_control.set_paused(self.broker, queue, True)
        return (await queue_control.overview(self.broker, [queue], only=True))[0]

    async def resume_queue(self, queue: str) -> QueueOverview:
        """Resume a paused queue: its waiting jobs start."""
        await queue_control.set_paused(self.broker, queue, False)
        return (await queue_control.overview(self.broker, [queue], only=True))[0]


class SyncClient:
    """A blocking wrapper of :class:`Client` for Flask/Django-style code."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = Client.from_url(url, **kwargs)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> SyncClient:
        return cls(url, **kwargs)

    def enqueue(self, type: str, payload: Any = None, **kwargs: Any) -> EnqueuedJob:
        try:
            return self._loop.run_until_complete(self._client.enqueue(type, payload, **kwargs))
        finally:
            _events.flush()  # this loop runs only during calls: its timer would not fire

    def enqueue_many(self, tasks: Sequence[TaskSpec | tuple[str, Any]]) -> list[EnqueuedJob]:
        try:
            return self._loop.run_until_complete(self._client.enqueue_many(tasks))
        finally:
            _events.flush()

    def get_job(self, job_id: str) -> JobInfo:
        return self._loop.run_until_complete(self._client.get_job(job_id))

    def cancel(self, job_id: str) -> CancelResult:
        """See :meth:`Client.cancel`."""
        return self._loop.run_until_complete(self._client.cancel(job_id))

    def queues(self) -> list[QueueOverview]:
        return self._loop.run_until_complete(self._client.queues())

    def pause_queue(self, queue: str) -> QueueOverview:
        return self._loop.run_until_complete(self._client.pause_queue(queue))

    def resume_queue(self, queue: str) -> QueueOverview:
        return self._loop.run_until_complete(self._client.resume_queue(queue))

    def close(self) -> None:
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()
