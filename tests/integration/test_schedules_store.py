"""The schedule scripts against the real Redis: put/pause, the claim of a tick, the re-drive of
a claim whose claimer died, and the in-process scheduler firing each tick once."""

from __future__ import annotations

import asyncio
import time

import pytest

from workqueue import JobType, hookimpl
from workqueue.broker import Broker
from workqueue.errors import PluginLoadError
from workqueue.plugins import load_plugins, reset_plugins
from workqueue.registry import Registry
from workqueue.schedules.model import Schedule, tick_job_id
from workqueue.schedules.plugins import plugin_schedules
from workqueue.schedules.store import ScheduleStore
from workqueue.worker.scheduler import Scheduler, tick_job

EVERY_SECOND = "* * * * * *"


def _store(broker: Broker) -> ScheduleStore:
    return ScheduleStore(broker.redis, broker.config.prefix)


async def test_put_creates_then_reports_same_and_plugin_never_overrides_operator(
    broker: Broker,
) -> None:
    store = _store(broker)
    mine = Schedule(name="nightly", cron="0 3 * * *", type="test_echo", payload={"a": 1})
    assert await store.put(mine, source="plugin") == "created"
    assert await store.put(mine, source="plugin") == "same"
    other = Schedule(name="nightly", cron="0 4 * * *", type="test_echo")
    assert await store.put(other, source="operator") == "updated"
    # the plugin's declaration no longer applies to an operator's schedule
    assert await store.put(mine, source="plugin") == "kept"
    state = await store.get("nightly")
    assert state is not None
    assert state.schedule.cron == "0 4 * * *"
    assert state.source == "operator"
    assert not state.paused
    assert await store.delete("nightly")
    assert await store.get("nightly") is None
    assert not await store.delete("nightly")


async def test_a_new_schedule_fires_only_ticks_after_its_creation(broker: Broker) -> None:
    store = _store(broker)
    before = int(time.time() * 1000)
    await store.put(Schedule(name="s", cron=EVERY_SECOND, type="t"), source="operator")
    state = await store.get("s")
    assert state is not None
    assert state.last_tick_ms >= before - 1000  # the anchor is the creation (Redis clock)
    claim = await store.claim("s", before - 5000, owner="w", lease_ms=1000, revision=1)
    assert claim.verdict == "stale"


async def test_one_tick_is_claimed_once_and_later_ticks_only(broker: Broker) -> None:
    store = _store(broker)
    await store.put(Schedule(name="s", cron=EVERY_SECOND, type="t"), source="operator")
    state = await store.get("s")
    assert state is not None
    tick = (state.last_tick_ms // 1000 + 1) * 1000
    await asyncio.sleep(max(0, tick - time.time() * 1000) / 1000 + 0.05)
    first = await store.claim("s", tick, owner="a", lease_ms=5000, revision=state.revision)
    assert first.verdict == "claimed"
    # another scheduler asking for the same tick while the claim is pending: busy
    assert (await store.claim("s", tick, owner="b", lease_ms=5000, revision=1)).verdict == "busy"
    assert await store.done("s", tick, tick_job_id("s", tick))
    assert not await store.done("s", tick, tick_job_id("s", tick))  # a repeat changes nothing
    assert (await store.claim("s", tick, owner="b", lease_ms=5000, revision=1)).verdict == "stale"
    after = await store.get("s")
    assert after is not None
    assert after.fired == 1
    assert after.last_job_id == tick_job_id("s", tick)
    # a tick in the future (by Redis's clock) is not claimed early
    future = await store.claim("s", tick + 60_000, owner="b", lease_ms=5000, revision=1)
    assert future.verdict == "early"


async def test_pause_refuses_claims_and_resume_skips_the_paused_ticks(broker: Broker) -> None:
    store = _store(broker)
    await store.put(Schedule(name="s", cron=EVERY_SECOND, type="t"), source="operator")
    assert await store.set_paused("s", True)
    state = await store.get("s")
    assert state is not None
    assert state.paused
    tick = (int(time.time()) + 1) * 1000
    await asyncio.sleep(max(0, tick - time.time() * 1000) / 1000 + 0.05)
    paused = await store.claim("s", tick, owner="a", lease_ms=1000, revision=state.revision)
    assert paused.verdict == "paused"
    assert await store.set_paused("s", False)
    resumed = await store.get("s")
    assert resumed is not None
    assert resumed.last_tick_ms >= tick  # the ticks of the pause do not fire
    claim = await store.claim("s", tick, owner="a", lease_ms=1000, revision=resumed.revision)
    assert claim.verdict == "stale"
    assert not await store.set_paused("nope", True)


async def test_a_claim_whose_claimer_died_is_redriven_and_enqueues_one_job(
    broker: Broker,
) -> None:
    store = _store(broker)
    schedule = Schedule(name="s", cron=EVERY_SECOND, type="test_echo", payload={"n": 1})
    await store.put(schedule, source="operator")
    state = await store.get("s")
    assert state is not None
    tick = (state.last_tick_ms // 1000 + 1) * 1000
    await asyncio.sleep(max(0, tick - time.time() * 1000) / 1000 + 0.05)
    claim = await store.claim("s", tick, owner="dead", lease_ms=200, revision=state.revision)
    assert claim.verdict == "claimed"
    # the claimer enqueued, then died before confirming
    job = tick_job(schedule, tick, Registry())
    await broker.enqueue([job])
    await asyncio.sleep(0.3)
    redrive = await store.claim("s", tick + 1000, owner="b", lease_ms=5000, revision=99)
    assert redrive.verdict == "redrive"
    assert redrive.tick_ms == tick
    (again,) = await broker.enqueue([tick_job(schedule, tick, Registry())])
    assert again.duplicate
    assert again.id == job.id
    assert await store.done("s", tick, job.id)
    assert await broker.redis.zcard(broker.keys("default").ledger) == 1


async def test_the_in_process_scheduler_fires_each_tick_once_with_two_schedulers(
    broker: Broker,
) -> None:
    store = _store(broker)
    schedule = Schedule(name="s", cron=EVERY_SECOND, type="test_echo")
    await store.put(schedule, source="operator")
    a = Scheduler(broker, Registry(), "a")
    b = Scheduler(broker, Registry(), "b")
    tasks = [asyncio.create_task(a.loop()), asyncio.create_task(b.loop())]
    await asyncio.sleep(3.5)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    state = await store.get("s")
    assert state is not None
    ids = [i.decode() for i in await broker.redis.zrange(broker.keys("default").ledger, 0, -1)]
    assert len(ids) == a.fired + b.fired == state.fired
    assert 2 <= len(ids) <= 4
    first = state.last_tick_ms - (len(ids) - 1) * 1000
    assert sorted(ids) == sorted(tick_job_id("s", first + i * 1000) for i in range(len(ids)))


class _Declares:
    """A plugin object declaring schedules through the hook."""

    def __init__(self, schedules: object) -> None:
        self.schedules = schedules

    @hookimpl
    def workqueue_schedules(self) -> object:
        return self.schedules


def test_plugin_schedules_are_collected_and_bad_hooks_named() -> None:
    good = _Declares(
        [Schedule(name="b", cron="0 * * * *", type="t"), Schedule("a", "* * * * *", "t")]
    )
    assert [s.name for s in plugin_schedules(load_plugins(only=[], extra=[good]))] == ["a", "b"]
    for bad, problem in [
        (_Declares("nope"), "must return a list of Schedule"),
        (_Declares([{"name": "x"}]), "expected workqueue.Schedule"),
    ]:
        with pytest.raises(PluginLoadError, match=problem):
            plugin_schedules(load_plugins(only=[], extra=[bad]))
    twice = [
        _Declares([Schedule("a", "* * * * *", "t")]),
        _Declares([Schedule("a", "* * * * *", "t")]),
    ]
    with pytest.raises(PluginLoadError, match="also declared by"):
        plugin_schedules(load_plugins(only=[], extra=twice))
    reset_plugins()


async def test_workers_register_the_plugins_schedules_but_not_over_an_operators(
    broker: Broker,
) -> None:
    store = _store(broker)
    registry = Registry.from_job_types([JobType(name="t", handler=_noop)])
    mine = Schedule(name="mine", cron="0 * * * *", type="t", payload={"k": 1})
    theirs = Schedule(name="theirs", cron="0 * * * *", type="t")
    unknown = Schedule(name="unknown", cron="0 * * * *", type="not_installed")
    await store.put(Schedule(name="theirs", cron="5 * * * *", type="t"), source="operator")
    scheduler = Scheduler(broker, registry, "w", declared=[mine, theirs, unknown])
    await scheduler.register_declared()
    await scheduler.register_declared()  # a second worker starting: nothing changes
    states = {s.schedule.name: s for s in await store.all()}
    assert set(states) == {"mine", "theirs"}  # a type nobody runs is not registered
    assert states["mine"].source == "plugin" and states["mine"].revision == 1
    assert states["theirs"].source == "operator" and states["theirs"].schedule.cron == "5 * * * *"
    # an operator's pause survives the plugin's registration at the next worker start
    assert await store.set_paused("mine", True)
    await scheduler.register_declared()
    paused = await store.get("mine")
    assert paused is not None and paused.paused


async def _noop(payload: object, ctx: object) -> None:
    return None


async def test_a_paused_schedule_does_not_fire_and_fires_again_after_resume(
    broker: Broker,
) -> None:
    store = _store(broker)
    await store.put(Schedule(name="p", cron=EVERY_SECOND, type="test_echo"), source="operator")
    assert await store.set_paused("p", True)
    scheduler = Scheduler(broker, Registry(), "a", max_sleep_s=0.2)
    task = asyncio.create_task(scheduler.loop())
    try:
        await asyncio.sleep(2.5)
        assert scheduler.fired == 0
        assert await broker.redis.zcard(broker.keys("default").ledger) == 0
        assert await store.set_paused("p", False)
        await asyncio.sleep(2.5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    state = await store.get("p")
    assert state is not None
    assert 1 <= scheduler.fired == state.fired <= 3
    assert await broker.redis.zcard(broker.keys("default").ledger) == state.fired


async def test_the_scheduler_redrives_a_tick_claimed_by_a_scheduler_that_died(
    broker: Broker,
) -> None:
    store = _store(broker)
    await store.put(Schedule(name="r", cron=EVERY_SECOND, type="test_echo"), source="operator")
    state = await store.get("r")
    assert state is not None
    tick = (state.last_tick_ms // 1000 + 1) * 1000
    await asyncio.sleep(max(0, tick - time.time() * 1000) / 1000 + 0.05)
    # a scheduler claimed the tick, then died before it enqueued anything
    died = await store.claim("r", tick, owner="dead", lease_ms=300, revision=state.revision)
    assert died.verdict == "claimed"
    await asyncio.sleep(0.4)
    scheduler = Scheduler(broker, Registry(), "alive")
    task = asyncio.create_task(scheduler.loop())
    try:
        await asyncio.sleep(1.5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    queued = {i.decode() for i in await broker.redis.lrange(broker.keys("default").queued, 0, -1)}
    assert tick_job_id("r", tick) in queued  # re-driven: not lost
    assert int(await broker.redis.hget(store.keys.schedule("r"), "redriven") or 0) == 1
    after = await store.get("r")
    assert after is not None
    assert after.pending_tick_ms is None
    assert after.fired == len(queued)  # and every later tick once
