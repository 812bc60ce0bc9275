"""The highly available cron scheduler that every worker runs (unless ``WORKQUEUE_SCHEDULER=0``).

Each worker writes its plugins' schedules to Redis when it starts, then loops: it reads the
definitions (again whenever their change counter moves, and every few seconds), works out for
each schedule the tick due now (:func:`workqueue.schedules.cron.due_tick_ms`), and fires it:

1. **claim** the tick in the schedule's own slot (``schedule_claim``): atomically, only if it is
   later than the last claimed tick; the claim is recorded as *pending* with a lease. Of any
   number of schedulers asking for one tick, exactly one gets it.
2. **enqueue** the tick's job into its queue (another slot) with a job id and idempotency key
   derived from the schedule's name and the tick, so a repeated enqueue writes nothing.
3. **confirm** (``schedule_done``): the pending claim is cleared.

A scheduler that dies between 1 and 3 leaves a pending claim; once its lease has passed the
next scheduler to ask re-drives that tick (steps 2 and 3 again): the enqueue of a job that was
written already answers the existing job. So a tick is neither lost nor doubled.

The loop sleeps until the earliest next tick of all schedules, at most ``max_sleep_s`` (5 s):
each wake-up reads the definitions' change counter (one GET), and all definitions are read
again when it moved or every ``refresh_s`` (30 s; this is also when a pending claim of a dead
scheduler is seen for a schedule that does not tick soon). So an idle worker pays about 0.2
Redis commands per second for the scheduler, and a new schedule is seen within 5 s (its first
ticks then fire late, never lost: they are within the catch-up window). A changed, paused or
deleted schedule takes effect at once: each claim checks the schedule's revision.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import replace

import msgspec
from loguru import logger
from redis.exceptions import RedisError

from workqueue.broker.broker import Broker
from workqueue.client import Limits
from workqueue.errors import WorkQueueError
from workqueue.job import NewJob
from workqueue.jobtypes import DEFAULT_RETRIES, DEFAULT_TIMEOUT_SECONDS
from workqueue.plugins import WorkQueuePluginManager
from workqueue.registry import Registry
from workqueue.schedules.checks import checked
from workqueue.schedules.cron import due_tick_ms, zone
from workqueue.schedules.model import (
    Schedule,
    ScheduleState,
    tick_idempotency_key,
    tick_job_id,
)
from workqueue.schedules.plugins import plugin_schedules
from workqueue.schedules.store import ScheduleStore

__all__ = [
    "CATCH_UP_ENV_VAR",
    "SCHEDULER_ENV_VAR",
    "Scheduler",
    "scheduler_enabled",
    "start_scheduler",
    "tick_job",
]

#: ``0``/``off``/``false``/``no`` keeps this worker from running the scheduler
SCHEDULER_ENV_VAR = "WORKQUEUE_SCHEDULER"
#: seconds a scheduler may fall behind and still fire every tick in order (default 15)
CATCH_UP_ENV_VAR = "WORKQUEUE_SCHEDULER_CATCH_UP_SECONDS"
_OFF = frozenset({"0", "off", "false", "no"})


def tick_job(schedule: Schedule, tick_ms: int, registry: Registry) -> NewJob:
    """The job one tick of ``schedule`` enqueues (the same job whoever fires the tick)."""
    job_type = registry.get(schedule.type)
    retries = job_type.retries if job_type else DEFAULT_RETRIES
    timeout = job_type.timeout if job_type else DEFAULT_TIMEOUT_SECONDS
    payload = schedule.payload_json()
    fingerprint = hashlib.sha256(
        msgspec.json.encode([schedule.type, schedule.queue, retries, timeout, -1, -1]) + payload
    ).hexdigest()[:32]
    return NewJob(
        id=tick_job_id(schedule.name, tick_ms),
        type=schedule.type,
        queue=schedule.queue,
        payload=payload,
        retries=retries,
        timeout=timeout,
        idempotency_key=tick_idempotency_key(schedule.name, tick_ms),
        fingerprint=fingerprint,
    )


class Scheduler:
    """One worker's scheduler loop (see the module docstring)."""

    def __init__(
        self,
        broker: Broker,
        registry: Registry,
        owner: str,
        *,
        declared: Sequence[Schedule] = (),
        lease_ms: int = 5_000,
        catch_up_ms: int = 15_000,
        refresh_s: float = 30.0,
        max_sleep_s: float = 5.0,
    ) -> None:
        self.broker = broker
        self.registry = registry
        self.owner = owner
        self.declared = list(declared)
        self.store = ScheduleStore(broker.redis, broker.config.prefix)
        self.lease_ms = lease_ms
        self.catch_up_ms = catch_up_ms
        self.refresh_s = refresh_s
        self.max_sleep_s = max_sleep_s
        self.fired = 0
        self._states: dict[str, ScheduleState] = {}
        self._version = -1
        self._loaded_at = 0.0
        self._stale = True

    async def register_declared(self) -> None:
        """Write the plugins' schedules to Redis (an operator's of the same name wins)."""
        remote: set[str] | None = None
        for declared in self.declared:
            if declared.type not in self.registry and remote is None:
                remote = await self.broker.advertised_types()
            try:
                schedule = checked(declared, self.registry, Limits(), remote or ())
            except WorkQueueError as exc:
                logger.error("the plugin's schedule {} is not registered: {}", declared.name, exc)
                continue
            verdict = await self.store.put(schedule, source="plugin")
            if verdict == "kept":
                logger.info(
                    "schedule {} is the operator's: the plugin's is not applied", schedule.name
                )
            elif verdict != "same":
                logger.info("schedule {} {} from a plugin", schedule.name, verdict)

    async def loop(self) -> None:
        """Register the declared schedules, then fire ticks until cancelled."""
        while True:
            try:
                await self.register_declared()
                break
            except (RedisError, OSError) as exc:
                logger.warning("could not register the plugins' schedules: {}", exc)
                await asyncio.sleep(1.0)
        while True:
            try:
                pause = await self.step()
            except (RedisError, OSError) as exc:
                logger.warning("scheduler step failed: {}", exc)
                self._stale = True
                pause = 1.0
            await asyncio.sleep(pause)

    async def _refresh(self) -> None:
        version = await self.store.version()
        due = time.monotonic() - self._loaded_at >= self.refresh_s
        if version != self._version or due or self._stale:
            self._states = {s.schedule.name: s for s in await self.store.all()}
            self._version = version
            self._loaded_at = time.monotonic()
            self._stale = False

    async def step(self) -> float:
        """Fire what is due now; return the seconds to sleep before the next step."""
        await self._refresh()
        pause = self.max_sleep_s
        for name in list(self._states):
            wait_ms = await self._step_one(name)
            pause = min(pause, wait_ms / 1000)
        return max(pause, 0.0)

    async def _step_one(self, name: str) -> int:
        """Handle one schedule; answer the ms until it wants attention again."""
        state = self._states[name]
        now = int(time.time() * 1000)
        if state.pending_tick_ms is not None and (state.pending_until_ms or 0) <= now:
            # a claim whose claimer vanished: ask for any tick, the script hands it over
            return await self._claim(state, state.pending_tick_ms)
        if state.paused:
            return int(self.max_sleep_s * 1000)
        s = state.schedule
        tick, following = due_tick_ms(s.cron, zone(s.timezone), state.last_tick_ms, now,
                                      self.catch_up_ms)  # fmt: skip
        if tick is None:
            return (following - now) if following is not None else int(self.max_sleep_s * 1000)
        return await self._claim(state, tick)

    async def _claim(self, state: ScheduleState, tick: int) -> int:
        name = state.schedule.name
        claim = await self.store.claim(
            name, tick, owner=self.owner, lease_ms=self.lease_ms, revision=state.revision
        )
        verdict = claim.verdict
        if verdict in ("claimed", "redrive"):
            if verdict == "redrive":
                logger.info("schedule {}: re-driving the tick claimed at {}", name, claim.tick_ms)
            await self._fire(state, claim.tick_ms)
            self._remember(state, last_tick_ms=max(state.last_tick_ms, claim.tick_ms))
            return 0
        if verdict == "stale":
            self._remember(state, last_tick_ms=claim.at_ms)
            return 0
        if verdict == "early":
            return max(1, tick - claim.at_ms)
        if verdict == "busy":  # another scheduler is between its claim and its confirm
            self._stale = True
            return 200
        self._stale = True  # gone, changed, paused: read the definitions again
        return 0 if verdict == "changed" else int(self.max_sleep_s * 1000)

    def _remember(self, state: ScheduleState, *, last_tick_ms: int) -> None:
        self._states[state.schedule.name] = replace(
            state, last_tick_ms=last_tick_ms, pending_tick_ms=None, pending_until_ms=None
        )

    async def _fire(self, state: ScheduleState, tick: int) -> None:
        job = tick_job(state.schedule, tick, self.registry)
        try:
            await self.broker.enqueue([job])
        except WorkQueueError as exc:
            # e.g. the queue limit: the claim stays pending and is re-driven after its lease
            logger.error("schedule {}: could not enqueue its job: {}", state.schedule.name, exc)
            self._stale = True
            return
        await self.store.done(state.schedule.name, tick, job.id)
        self.fired += 1


def scheduler_enabled() -> bool:
    """Whether this process runs the scheduler (``WORKQUEUE_SCHEDULER``, default on)."""
    return os.environ.get(SCHEDULER_ENV_VAR, "1").strip().lower() not in _OFF


def start_scheduler(
    broker: Broker, registry: Registry, pm: WorkQueuePluginManager | None, owner: str
) -> list[asyncio.Task[None]]:
    """Start this worker's scheduler task (none when ``WORKQUEUE_SCHEDULER=0``).

    The plugins' schedules are collected here; a plugin whose ``workqueue_schedules()`` fails
    is logged as an error and its schedules are left out (the worker still runs jobs).
    """
    if not scheduler_enabled():
        return []
    try:
        declared = plugin_schedules(pm)
    except WorkQueueError as exc:
        logger.error("the plugins' schedules are not registered: {}", exc)
        declared = []
    raw = os.environ.get(CATCH_UP_ENV_VAR, "15")
    try:
        catch_up = float(raw)
        if not 0 <= catch_up < 86400:
            raise ValueError(raw)
    except ValueError:
        logger.error("{}={!r} is not a number of seconds: using 15", CATCH_UP_ENV_VAR, raw)
        catch_up = 15.0
    scheduler = Scheduler(
        broker, registry, owner, declared=declared, catch_up_ms=int(catch_up * 1000)
    )
    return [asyncio.create_task(scheduler.loop(), name="wq-scheduler")]
