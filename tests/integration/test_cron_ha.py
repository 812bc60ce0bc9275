"""Highly available cron with real worker subprocesses: three schedulers on an every-second
schedule with one SIGKILLed mid-way fire every tick exactly once; ticks missed while no worker
ran fire once when one comes back.

The schedule's queue is one no worker consumes, so every fired job stays in its queued list:
a tick enqueued twice would show there as an id listed twice (or as a second id for one tick).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from wq_testkit import WorkerProcs

from workqueue.broker import Broker
from workqueue.schedules.model import Schedule, tick_job_id
from workqueue.schedules.store import ScheduleStore

pytestmark = pytest.mark.slow

QUEUE = "cron-ha"


async def _fired(broker: Broker, name: str, since_ms: int, until_ms: int) -> dict[int, float]:
    """tick -> enqueued_at (ms) of the jobs the schedule's ticks in the window wrote; asserts
    that no job is queued twice and that every queued job is one of those ticks'."""
    keys = broker.keys(QUEUE)
    queued = [i.decode() for i in await broker.redis.lrange(keys.queued, 0, -1)]
    assert len(queued) == len(set(queued)), "a job id is queued twice"
    first = since_ms // 1000 * 1000
    by_id = {tick_job_id(name, t): t for t in range(first, until_ms + 1, 1000)}
    unknown = [job_id for job_id in queued if job_id not in by_id]
    assert not unknown, f"jobs of no tick in the window: {unknown}"
    ledger = dict(await broker.redis.zrange(keys.ledger, 0, -1, withscores=True))
    assert len(ledger) == len(queued)
    return {by_id[job_id]: ledger[job_id.encode()] for job_id in queued}


def _runs(ticks: list[int]) -> list[list[int]]:
    """Consecutive ticks (1 s apart) grouped."""
    runs: list[list[int]] = []
    for tick in sorted(ticks):
        if runs and tick - runs[-1][-1] == 1000:
            runs[-1].append(tick)
        else:
            runs.append([tick])
    return runs


async def test_three_schedulers_one_killed_fire_every_tick_exactly_once(
    installed_test_plugin: None, broker: Broker, workers: WorkerProcs
) -> None:
    store = ScheduleStore(broker.redis, broker.config.prefix)
    schedule = Schedule(name="ha", cron="* * * * * *", type="test_echo", queue=QUEUE)
    start_ms = int(time.time() * 1000)
    await store.put(schedule, source="operator")
    procs = [workers.start(env={"WORKQUEUE_PLUGINS": ""}) for _ in range(3)]
    await asyncio.sleep(5)
    os.killpg(procs[0].pid, signal.SIGKILL)  # mid-way, whatever it was doing
    await asyncio.sleep(6)
    workers.stop_all()  # SIGKILL: the last tick may be claimed but not confirmed, or not enqueued
    state = await store.get("ha")
    assert state is not None
    end_ms = state.last_tick_ms
    fired = await _fired(broker, "ha", start_ms - 1000, end_ms)
    runs = _runs(list(fired))
    assert len(runs) == 1, f"a tick is missing: runs {[(r[0], r[-1]) for r in runs]}"
    ticks = runs[0]
    assert ticks[0] <= start_ms + 1000  # from the first tick after the schedule was made...
    assert ticks[-1] >= end_ms - 1000  # ...to (about) the last one claimed
    assert len(ticks) >= 9
    after = await store.get("ha")
    assert after is not None
    assert after.fired in (len(ticks), len(ticks) - 1)  # the last confirm may be cut off


async def test_ticks_missed_while_no_worker_ran_fire_once_on_return(
    installed_test_plugin: None, broker: Broker, workers: WorkerProcs
) -> None:
    store = ScheduleStore(broker.redis, broker.config.prefix)
    await store.put(
        Schedule(name="gap", cron="* * * * * *", type="test_echo", queue=QUEUE),
        source="operator",
    )
    env = {"WORKQUEUE_PLUGINS": "", "WORKQUEUE_SCHEDULER_CATCH_UP_SECONDS": "2"}
    first = workers.start(env=env)
    await asyncio.sleep(4)
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=30)
    down_ms = int(time.time() * 1000)
    await asyncio.sleep(6)  # 6 ticks nobody fires
    back_ms = int(time.time() * 1000)
    workers.start(env=env)
    await asyncio.sleep(4)
    workers.stop_all()
    state = await store.get("gap")
    assert state is not None
    fired = await _fired(broker, "gap", down_ms - 10_000, state.last_tick_ms)
    runs = _runs(list(fired))
    assert len(runs) == 2, f"expected one gap: runs {[(r[0], r[-1]) for r in runs]}"
    before, after = runs
    assert before[-1] <= down_ms
    # the gap: none of the ticks of the downtime fired but the latest one due at the return
    assert after[0] - before[-1] >= 5000
    assert after[0] >= back_ms - 1000
    assert len(after) >= 2
