"""Checks a schedule must pass before it is stored (CLI, HTTP, a worker registering a plugin's):
its job type is known and its payload fits that type, as for an enqueued task."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import msgspec

from workqueue.client import Limits, TaskSpec, prepare_task
from workqueue.registry import Registry
from workqueue.schedules.cron import next_tick_ms, zone
from workqueue.schedules.model import Schedule, ScheduleState

__all__ = ["CRON_REGEX", "checked", "with_next_tick"]


def _field(number: str, step: str) -> str:
    return rf"(?:\*(?:/(?:{step}))?|(?:{number})(?:,(?:{number})){{0,3}})"


_MINUTE = _field(r"[1-5]?[0-9]", r"[1-9]|[1-5][0-9]")
_HOUR = _field(r"1?[0-9]|2[0-3]", r"[1-9]|1[0-9]|2[0-3]")
_DAY = _field(r"[1-9]|1[0-9]|2[0-8]", r"[1-9]|[12][0-9]|3[01]")
_MONTH = _field(r"[1-9]|1[0-2]", r"[1-9]|1[0-2]")
_WEEKDAY = _field(r"[0-6]", r"[1-7]")
#: The common subset of cron the OpenAPI document states (``*``, ``*/n``, numbers and lists of
#: them; days of month up to 28): every string it matches is a valid expression that fires.
#: The server accepts every expression cronsim does (ranges, names, ``L``, ``W``, ``#``).
CRON_REGEX = rf"^(?:{_MINUTE} )?{_MINUTE} {_HOUR} {_DAY} {_MONTH} {_WEEKDAY}$"


def checked(
    schedule: Schedule, registry: Registry, limits: Limits, remote: Iterable[str] = ()
) -> Schedule:
    """``schedule`` with its payload as a job of its type would carry it; raises
    :class:`~workqueue.errors.TaskValidationError` (or a subclass: unknown job type, invalid
    payload) like an enqueue of that task would. ``remote``: the types live workers advertise
    (accepted though this process has no plugin for them)."""
    job = prepare_task(
        TaskSpec(type=schedule.type, payload=schedule.payload, queue=schedule.queue),
        registry,
        limits,
        remote,
    )
    return dataclasses.replace(schedule, payload=msgspec.json.decode(job.payload))


def with_next_tick(state: ScheduleState, now_ms: int) -> ScheduleState:
    """``state`` with the next tick it fires at filled in (None while paused)."""
    if state.paused:
        return state
    s = state.schedule
    after = max(state.last_tick_ms, now_ms)
    return dataclasses.replace(state, next_tick_ms=next_tick_ms(s.cron, zone(s.timezone), after))
