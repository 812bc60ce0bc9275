"""What a schedule is: :class:`Schedule` (declared by a plugin or an operator) and
:class:`ScheduleState` (a schedule as stored, with where its firing stands)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from workqueue.errors import TaskValidationError
from workqueue.jobtypes import NAME_PATTERN
from workqueue.schedules.cron import CronError, normalize, utc_text, zone

__all__ = ["Schedule", "ScheduleSource", "ScheduleState", "tick_idempotency_key", "tick_job_id"]

#: who wrote a stored schedule: a plugin's ``workqueue_schedules()`` hook (registered by each
#: worker at start) or an operator (CLI / HTTP). An operator's schedule is never overwritten by
#: a plugin's of the same name.
ScheduleSource = Literal["plugin", "operator"]

#: the longest JSON text a schedule's payload may be
MAX_PAYLOAD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Schedule:
    """A job to enqueue on every tick of a cron expression.

    ``cron``: five fields (minute hour day-of-month month day-of-week) or six with a leading
    seconds field. ``timezone``: an IANA name; the expression follows that zone's wall clock
    (DST rules: docs/scheduling.md). Each tick enqueues one job of ``type`` with ``payload``
    into ``queue``, with a job id derived from the schedule's name and the tick.
    Invalid values raise :class:`~workqueue.errors.TaskValidationError` naming the field.
    """

    name: str
    cron: str
    type: str
    payload: Any = None
    queue: str = "default"
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        for field in ("name", "type", "queue"):
            value = getattr(self, field)
            if not isinstance(value, str) or not NAME_PATTERN.match(value):
                raise TaskValidationError(
                    field, "must be 1-128 characters of letters, digits and _ . : -"
                )
        try:
            object.__setattr__(self, "cron", normalize(self.cron))
            zone(self.timezone)
        except CronError as exc:
            field = "timezone" if "time zone" in str(exc) else "cron"
            raise TaskValidationError(field, str(exc)) from None
        if len(self.payload_json()) > MAX_PAYLOAD_BYTES:
            raise TaskValidationError("payload", f"is over {MAX_PAYLOAD_BYTES} bytes of JSON")

    def payload_json(self) -> bytes:
        """The payload as JSON text (what each fired job carries; no payload: ``{}``)."""
        try:
            return msgspec.json.encode({} if self.payload is None else self.payload)
        except (TypeError, msgspec.EncodeError, OverflowError) as exc:
            raise TaskValidationError("payload", f"is not JSON: {exc}") from None

    def definition(self) -> dict[str, str]:
        """The stored fields of the definition (all strings)."""
        return {
            "cron": self.cron,
            "type": self.type,
            "payload": self.payload_json().decode(),
            "queue": self.queue,
            "timezone": self.timezone,
        }


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """A stored schedule: its definition and where its firing stands (times: epoch ms)."""

    schedule: Schedule
    source: ScheduleSource
    paused: bool
    revision: int
    #: the last tick claimed, or the moment the schedule was created/changed/resumed (ticks
    #: after it fire)
    last_tick_ms: int
    last_job_id: str | None = None
    #: the last tick whose job was confirmed enqueued
    fired_tick_ms: int | None = None
    fired: int = 0
    #: a claimed tick whose job is not yet confirmed enqueued (re-driven after the claim's lease)
    pending_tick_ms: int | None = None
    pending_until_ms: int | None = None
    next_tick_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``GET /schedules/{name}`` and ``workqueue schedules list --json``."""
        s = self.schedule
        return {
            "name": s.name,
            "cron": s.cron,
            "type": s.type,
            "payload": s.payload,
            "queue": s.queue,
            "timezone": s.timezone,
            "paused": self.paused,
            "source": self.source,
            "last_tick": utc_text(self.fired_tick_ms) if self.fired_tick_ms else None,
            "last_job_id": self.last_job_id,
            "fired": self.fired,
            "next_tick": utc_text(self.next_tick_ms) if self.next_tick_ms is not None else None,
        }


def tick_job_id(name: str, tick_ms: int) -> str:
    """The id of the job a schedule's tick enqueues: 32 hex digits derived from the schedule's
    name and the tick (so every scheduler that fires that tick writes the same job)."""
    return hashlib.sha256(f"cron\n{name}\n{tick_ms}".encode()).hexdigest()[:32]


def tick_idempotency_key(name: str, tick_ms: int) -> str:
    """The idempotency key of a tick's job (a re-driven enqueue finds the job it wrote)."""
    return f"cron:{name}:{tick_ms}"
