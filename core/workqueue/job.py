"""The job model shared by producer, client and worker: what goes into Redis and comes out."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import msgspec

__all__ = [
    "JOB_FIELDS",
    "Attempt",
    "EnqueuedJob",
    "JobInfo",
    "NewJob",
    "ReservedJob",
    "Status",
    "ms_to_datetime",
    "utc_text",
]


class Status(enum.StrEnum):
    """The states of a job; each lives in exactly one Redis index (see docs/architecture.md)."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    ACTIVE = "active"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    #: final, like completed and failed (kept for the failed retention)
    CANCELLED = "cancelled"


def ms_to_datetime(ms: int | None) -> datetime | None:
    """Redis-clock milliseconds to an aware UTC datetime (``None`` for a time out of range)."""
    if ms is None:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, ValueError, OSError):  # a corrupt record: no such time
        return None


def utc_text(moment: datetime | None) -> str | None:
    """The one time format of HTTP answers and the CLI's ``--json`` output: RFC 3339 in UTC
    with milliseconds and ``Z`` (``2026-01-02T03:04:05.678Z``), as the event log writes it;
    Redis keeps milliseconds."""
    if moment is None:
        return None
    t = moment.astimezone(UTC) if moment.tzinfo is not None else moment
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
        f".{t.microsecond // 1000:03d}Z"
    )


class NewJob(msgspec.Struct, frozen=True):
    """A validated job ready to be written (payload already JSON-encoded)."""

    id: str
    type: str
    queue: str
    payload: bytes
    retries: int
    timeout: float
    delay_ms: int = -1
    run_at_ms: int = -1
    idempotency_key: str = ""
    fingerprint: str = ""
    #: limits of the type apply per (type, limit_key) ('' = the type's own bucket)
    limit_key: str = ""
    #: 0-9, higher starts first (SPEC 12)
    priority: int = 0
    #: a unique job's fingerprint (type and canonical payload; ``""``: not unique)
    unique_key: str = ""
    #: W3C trace context of the enqueue span (workqueue.tracing; "" without tracing); to be
    #: stored as the record field ``traceparent`` by enqueue.lua
    traceparent: str = ""


class EnqueuedJob(msgspec.Struct, frozen=True):
    """The answer to an enqueue: the job's id and where it went."""

    id: str
    type: str
    queue: str
    status: str
    retries: int
    enqueued_at: datetime
    duplicate: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of the HTTP answer."""
        return {
            "id": self.id,
            "type": self.type,
            "queue": self.queue,
            "status": self.status,
            "retries": self.retries,
            "enqueued_at": utc_text(self.enqueued_at),
        }


class ReservedJob(msgspec.Struct, frozen=True):
    """A job a worker holds a lease on, with the fencing token of that lease."""

    id: str
    queue: str
    token: str
    type: str
    payload: bytes
    attempt: int
    retries: int
    timeout: float
    enqueued_at_ms: int
    failures: int
    lost: int
    #: the record's ``traceparent`` (workqueue.tracing; "" when none)
    traceparent: str = ""


class Attempt(msgspec.Struct, frozen=True):
    """One entry of a job's attempt history (the last 25 attempts are kept)."""

    attempt: int
    worker: str
    started_at: datetime | None
    finished_at: datetime | None
    #: running, succeeded, failed, timed_out, lost, released or cancelled
    outcome: str
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of a ``history`` entry, times as RFC 3339 strings."""
        return {
            "attempt": self.attempt,
            "worker": self.worker,
            "started_at": utc_text(self.started_at),
            "finished_at": utc_text(self.finished_at),
            "outcome": self.outcome,
            "error": self.error,
        }


class JobInfo(msgspec.Struct, frozen=True):
    """Everything ``GET /jobs/{id}`` shows about a job."""

    id: str
    type: str
    queue: str
    status: str
    attempts: int
    retries: int
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    result: Any
    error: str | None
    failures: int = 0
    lost_leases: int = 0
    run_at: datetime | None = None
    #: the last value the handler reported with ``ctx.set_progress`` (a number or an object)
    progress: Any = None
    #: the last 25 attempts, oldest first
    history: list[Attempt] = msgspec.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``GET /jobs/{id}`` (SPEC sections 3 and 11), times as RFC 3339
        strings."""
        shown = {name: getattr(self, name) for name in JOB_FIELDS}
        for name in ("enqueued_at", "started_at", "finished_at"):
            if shown[name] is not None:
                shown[name] = utc_text(shown[name])
        shown["history"] = [entry.to_dict() for entry in self.history]
        return shown


#: the fields ``GET /jobs/{id}`` shows, in order
JOB_FIELDS = (
    "id",
    "type",
    "queue",
    "status",
    "attempts",
    "retries",
    "enqueued_at",
    "started_at",
    "finished_at",
    "result",
    "error",
    "progress",
    "history",
)
