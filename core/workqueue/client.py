"""Enqueue from Python without the HTTP hop: :class:`Client` (asyncio) and :class:`SyncClient`.

The producer's routes use the same :func:`prepare_task` validation and the same broker call,
so there is one code path for enqueueing.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec

from workqueue import clock
from workqueue.broker.broker import Broker, BrokerConfig
from workqueue.broker.connection import create_redis
from workqueue.errors import IdempotencyConflict, TaskValidationError, UnknownJobTypeError
from workqueue.job import EnqueuedJob, JobInfo, NewJob, ms_to_datetime
from workqueue.jobtypes import DEFAULT_RETRIES, DEFAULT_TIMEOUT_SECONDS, NAME_PATTERN
from workqueue.registry import Registry
from workqueue.schema import to_builtins

__all__ = ["Client", "Limits", "SyncClient", "TaskSpec", "prepare_task"]


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


def _number(field: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TaskValidationError(field, "must be a number")
    if not math.isfinite(value) or not low <= value <= high:
        raise TaskValidationError(field, f"must be between {low:g} and {high:g}")
    return float(value)


def prepare_task(
    spec: TaskSpec, registry: Registry, limits: Limits, known_remote: Iterable[str] = ()
) -> NewJob:
    """Validate a task and turn it into a :class:`NewJob` (raises TaskValidationError)."""
    if not isinstance(spec.type, str) or not NAME_PATTERN.match(spec.type):
        raise TaskValidationError("type", "must be 1-128 characters of A-Za-z0-9_.:-")
    if not isinstance(spec.queue, str) or not NAME_PATTERN.match(spec.queue):
        raise TaskValidationError("queue", "must be 1-128 characters of A-Za-z0-9_.:-")
    job_type = registry.get(spec.type)
    remote = set(known_remote)
    if job_type is None and spec.type not in remote:
        raise UnknownJobTypeError(spec.type, [*registry.names(), *remote])
    payload = {} if spec.payload is None else spec.payload
    if not isinstance(payload, dict):
        raise TaskValidationError("payload", "must be a JSON object")
    if job_type is not None:
        payload = to_builtins(registry.validate_payload(spec.type, payload))
    try:
        encoded = msgspec.json.encode(payload)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TaskValidationError("payload", f"is not JSON-serialisable: {exc}") from None
    if len(encoded) > limits.max_payload_bytes:
        raise TaskValidationError(
            "payload", f"is {len(encoded)} bytes; the limit is {limits.max_payload_bytes}"
        )
    default_retries = job_type.retries if job_type else DEFAULT_RETRIES
    retries = spec.retries if spec.retries is not None else default_retries
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise TaskValidationError("retries", "must be an integer")
    if not 0 <= retries <= limits.max_retries:
        raise TaskValidationError("retries", f"must be between 0 and {limits.max_retries}")
    default_timeout = job_type.timeout if job_type else DEFAULT_TIMEOUT_SECONDS
    timeout = default_timeout if spec.timeout is None else spec.timeout
    timeout = _number("timeout", timeout, 0.001, limits.max_timeout_s)
    delay_ms = run_at_ms = -1
    if spec.delay is not None and spec.run_at is not None:
        raise TaskValidationError("delay", "give either delay or run_at, not both")
    if spec.delay is not None:
        delay_ms = int(_number("delay", spec.delay, 0, limits.max_delay_s) * 1000)
    if spec.run_at is not None:
        run_at_ms = _run_at_ms(spec.run_at)
    key = spec.idempotency_key or ""
    if len(key) > limits.max_idempotency_key or any(c in key for c in "\r\n\0"):
        raise TaskValidationError("idempotency_key", "too long or contains control characters")
    fingerprint = ""
    if key:
        fingerprint = hashlib.sha256(
            msgspec.json.encode([spec.type, spec.queue, retries, timeout, delay_ms, run_at_ms])
            + encoded
        ).hexdigest()[:32]
    return NewJob(
        id=uuid.uuid4().hex,
        type=spec.type,
        queue=spec.queue,
        payload=encoded,
        retries=retries,
        timeout=timeout,
        delay_ms=delay_ms,
        run_at_ms=run_at_ms,
        idempotency_key=key,
        fingerprint=fingerprint,
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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


class Client:
    """The asyncio client of SPEC section 3."""

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
        """Close the Redis connections."""
        await self.broker.redis.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def advertised_types(self) -> set[str]:
        """Job types that live workers advertise in Redis."""
        keys = self.broker.globals
        ids = await self.broker.redis.zrange(keys.workers, 0, -1)
        if not ids:
            return set()
        adverts = await self.broker.redis.mget([keys.worker(_text(i)) for i in ids])
        types: set[str] = set()
        for advert in adverts:
            if advert:
                try:
                    types.update(msgspec.json.decode(advert).get("types", []))
                except (msgspec.DecodeError, AttributeError):
                    continue
        return types

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
    ) -> EnqueuedJob:
        """Validate and enqueue one job (one round trip)."""
        spec = TaskSpec(type, payload, retries, queue, delay, run_at, timeout, idempotency_key)
        (job,) = await self.enqueue_specs([spec])
        return job

    async def enqueue_many(self, tasks: Sequence[TaskSpec | tuple[str, Any]]) -> list[EnqueuedJob]:
        """Validate all, then write all in one round trip (all-or-nothing validation)."""
        specs = [t if isinstance(t, TaskSpec) else TaskSpec(t[0], t[1]) for t in tasks]
        return await self.enqueue_specs(specs)

    async def enqueue_specs(self, specs: Sequence[TaskSpec]) -> list[EnqueuedJob]:
        """The one enqueue path: validation, then one broker call."""
        remote: set[str] = set()
        if self.check_types and any(s.type not in self.registry for s in specs):
            remote = await self.advertised_types()
        jobs = []
        for spec in specs:
            if not self.check_types:
                remote.add(spec.type)
            jobs.append(prepare_task(spec, self.registry, self.limits, remote))
        results = await self.broker.enqueue(jobs)
        answers = []
        for job, (job_id, status, duplicate, fingerprint, now_ms) in zip(
            jobs, results, strict=True
        ):
            if duplicate and job.idempotency_key and fingerprint != job.fingerprint:
                raise IdempotencyConflict(job_id)
            enqueued_at = ms_to_datetime(now_ms) or clock.now_datetime()
            if duplicate:
                info = await self.broker.get_job(job_id, job.queue)
                enqueued_at = info.enqueued_at or enqueued_at
                status = info.status
            answers.append(
                EnqueuedJob(
                    job_id, job.type, job.queue, status, job.retries, enqueued_at, duplicate
                )
            )
        return answers

    async def get_job(self, job_id: str) -> JobInfo:
        """The job's current record (raises JobNotFound)."""
        return await self.broker.get_job(job_id)


class SyncClient:
    """A blocking wrapper of :class:`Client` for Flask/Django-style code."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = Client.from_url(url, **kwargs)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> SyncClient:
        return cls(url, **kwargs)

    def enqueue(self, type: str, payload: Any = None, **kwargs: Any) -> EnqueuedJob:
        return self._loop.run_until_complete(self._client.enqueue(type, payload, **kwargs))

    def enqueue_many(self, tasks: Sequence[TaskSpec | tuple[str, Any]]) -> list[EnqueuedJob]:
        return self._loop.run_until_complete(self._client.enqueue_many(tasks))

    def get_job(self, job_id: str) -> JobInfo:
        return self._loop.run_until_complete(self._client.get_job(job_id))

    def close(self) -> None:
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()
