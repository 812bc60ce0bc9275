"""The schedules in Redis: :class:`ScheduleStore` (definitions, pause, the claim of a tick).

Key layout (``<p>`` the key prefix; every key in the one slot of the hash tag ``{!schedules}``,
which no queue's keys can share: ``!`` is not allowed in queue names)::

    <p>:{!schedules}:index     SET    names of the stored schedules
    <p>:{!schedules}:version   STRING bumped on every definition change (schedulers poll it)
    <p>:{!schedules}:s:<name>  HASH   one schedule: cron, type, payload (JSON), queue, timezone,
                                      paused, source (plugin|operator), rev, created_at,
                                      updated_at, last_tick (the last claimed tick, or the
                                      anchor after create/change/resume), pending_tick,
                                      pending_until, pending_owner (a claimed tick whose job
                                      is not confirmed yet), last_job_id, fired_tick (its
                                      tick), last_fired_at, fired, redriven

Scripts: ``schedule_put``, ``schedule_pause``, ``schedule_claim``, ``schedule_done``,
``schedule_delete`` (see their headers in ``broker/lua``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from workqueue.broker.keys import DEFAULT_PREFIX
from workqueue.broker.scripts import source
from workqueue.errors import WorkQueueError
from workqueue.schedules.model import Schedule, ScheduleSource, ScheduleState

__all__ = ["Claim", "ScheduleKeys", "ScheduleStore"]


@dataclass(frozen=True, slots=True)
class ScheduleKeys:
    """The key names of the schedules (one slot)."""

    prefix: str = DEFAULT_PREFIX

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{!schedules}}:"

    @property
    def index(self) -> str:
        return self.base + "index"

    @property
    def version(self) -> str:
        return self.base + "version"

    def schedule(self, name: str) -> str:
        return self.base + "s:" + name


@dataclass(frozen=True, slots=True)
class Claim:
    """What ``schedule_claim`` answered (see the script): ``verdict`` and the tick it names."""

    verdict: str
    tick_ms: int = 0
    #: ``last_tick`` for stale/changed/paused/busy, Redis's clock for early
    at_ms: int = 0
    revision: int = 0


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ScheduleStore:
    """Reads and writes the schedules of one key prefix."""

    def __init__(self, redis: Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self.redis = redis
        self.keys = ScheduleKeys(prefix)
        self._put: AsyncScript = redis.register_script(source("schedule_put"))
        self._pause: AsyncScript = redis.register_script(source("schedule_pause"))
        self._claim: AsyncScript = redis.register_script(source("schedule_claim"))
        self._done: AsyncScript = redis.register_script(source("schedule_done"))
        self._delete: AsyncScript = redis.register_script(source("schedule_delete"))

    # -- definitions ---------------------------------------------------------------------------

    async def put(
        self, schedule: Schedule, *, source: ScheduleSource, paused: bool | None = None
    ) -> str:
        """Create or change ``schedule``; answers ``created``, ``updated``, ``same`` or ``kept``
        (a plugin's schedule does not replace an operator's of the same name)."""
        d = schedule.definition()
        flag = "" if paused is None else ("1" if paused else "0")
        raw = await self._put(
            keys=[self.keys.index, self.keys.schedule(schedule.name), self.keys.version],
            args=[schedule.name, source, flag, d["cron"], d["type"], d["payload"], d["queue"],
                  d["timezone"]],
        )  # fmt: skip
        return _s(raw[0])

    async def set_paused(self, name: str, paused: bool) -> bool:
        """Pause or resume; False if there is no such schedule."""
        raw = await self._pause(
            keys=[self.keys.schedule(name), self.keys.version], args=["1" if paused else "0"]
        )
        return bool(int(raw))

    async def delete(self, name: str) -> bool:
        """Remove a schedule; False if there was none. (A plugin's schedule comes back when a
        worker with that plugin starts: pause it to keep it from firing.)"""
        deleted = await self._delete(
            keys=[self.keys.index, self.keys.schedule(name), self.keys.version], args=[name]
        )
        return bool(int(deleted))

    async def version(self) -> int:
        """The change counter of the definitions."""
        raw = await self.redis.get(self.keys.version)
        return int(raw) if raw else 0

    async def names(self) -> list[str]:
        """The names of the stored schedules, sorted."""
        return sorted(_s(n) for n in await self.redis.smembers(self.keys.index))

    async def get(self, name: str) -> ScheduleState | None:
        """The stored schedule called ``name``, or None."""
        found = await self.get_many([name])
        return found[0] if found else None

    async def all(self) -> list[ScheduleState]:
        """Every stored schedule, by name."""
        return await self.get_many(await self.names())

    async def get_many(self, names: list[str]) -> list[ScheduleState]:
        """The stored schedules of ``names`` (missing or unreadable ones left out)."""
        if not names:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self.keys.schedule(name))
            records = await pipe.execute()
        states = []
        for name, record in zip(names, records, strict=True):
            state = _state(name, {_s(k): _s(v) for k, v in record.items()})
            if state is not None:
                states.append(state)
        return states

    # -- firing --------------------------------------------------------------------------------

    async def claim(
        self, name: str, tick_ms: int, *, owner: str, lease_ms: int, revision: int
    ) -> Claim:
        """Claim ``tick_ms`` of schedule ``name`` (see ``schedule_claim.lua``)."""
        raw = await self._claim(
            keys=[self.keys.schedule(name)], args=[tick_ms, owner, lease_ms, revision]
        )
        verdict = _s(raw[0])
        if verdict == "claimed":
            return Claim(verdict, tick_ms=int(raw[1]))
        if verdict == "redrive":
            return Claim(verdict, tick_ms=int(raw[1]), revision=int(raw[2]))
        if verdict == "gone":
            return Claim(verdict)
        return Claim(verdict, at_ms=int(raw[1]))

    async def done(self, name: str, tick_ms: int, job_id: str) -> bool:
        """Confirm that the claimed ``tick_ms`` has its job (clears the pending claim)."""
        raw = await self._done(keys=[self.keys.schedule(name)], args=[tick_ms, job_id])
        return bool(int(raw))


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _state(name: str, record: dict[str, str]) -> ScheduleState | None:
    """A stored record as a :class:`ScheduleState` (None when it is not a complete schedule)."""
    if "cron" not in record or "rev" not in record:
        return None
    try:
        schedule = Schedule(
            name=name,
            cron=record["cron"],
            type=record.get("type", ""),
            payload=msgspec.json.decode(record.get("payload", "null")),
            queue=record.get("queue", ""),
            timezone=record.get("timezone", ""),
        )
    except (WorkQueueError, msgspec.DecodeError):
        return None
    source: ScheduleSource = "plugin" if record.get("source") == "plugin" else "operator"
    return ScheduleState(
        schedule=schedule,
        source=source,
        paused=record.get("paused") == "1",
        revision=_int(record.get("rev")) or 0,
        last_tick_ms=_int(record.get("last_tick")) or 0,
        last_job_id=record.get("last_job_id") or None,
        fired_tick_ms=_int(record.get("fired_tick")),
        fired=_int(record.get("fired")) or 0,
        pending_tick_ms=_int(record.get("pending_tick")),
        pending_until_ms=_int(record.get("pending_until")),
    )
