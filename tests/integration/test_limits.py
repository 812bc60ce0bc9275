"""Fleet-wide limits (SPEC 12): concurrency and rate per job type and per (type, limit_key),
enforced across worker processes, held-back jobs using no attempt, no hot loop, run-time
changes followed by running workers.

The handlers keep their own record (``test_limited_*`` of the test plugin append ``start`` and
``end`` lines with wall-clock times to a ledger file); the checks read that record, not the
worker's view of itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_server import RedisServer
from worker_waits import ledger_lines, wait_for
from wq_testkit import REDIS_URL, TEST_PLUGIN, WorkerProcs

from workqueue.broker import Broker, BrokerConfig
from workqueue.broker.connection import create_redis
from workqueue.client import Client, TaskSpec
from workqueue.registry import build_registry
from workqueue.worker.limiting import REFRESH_SECONDS

pytestmark = pytest.mark.slow

WORKER_ARGS = ("--idle-wait-seconds", "1", "--housekeep-seconds", "0.5")


def limits_cli(prefix: str, *args: str, url: str = REDIS_URL) -> Any:
    """``workqueue limits ... --json`` in a subprocess; its JSON answer."""
    env = {
        **os.environ,
        "WORKQUEUE_PLUGINS": TEST_PLUGIN,
        "WORKQUEUE_KEY_PREFIX": prefix,
        "WORKQUEUE_REDIS_URL": url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "workqueue", "limits", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def intervals(
    path: Path, killed: dict[int, float] | None = None
) -> list[tuple[float, float, str, Any]]:
    """``(start, end, job_id, tag)`` of every attempt the ledger records; an attempt without an
    end ran until its process was killed (``killed``: pid -> kill time), else it runs still."""
    starts: dict[tuple[str, int, int], dict[str, Any]] = {}
    ends: dict[tuple[str, int, int], float] = {}
    for line in ledger_lines(path):
        key = (line["job_id"], line["attempt"], line["pid"])
        if line["event"] == "start":
            starts[key] = line
        else:
            ends[key] = line["t"]
    out = []
    for key, line in starts.items():
        end = ends.get(key)
        if end is None:
            end = (killed or {}).get(key[2], float("inf"))
        out.append((line["t"], end, key[0], line.get("tag")))
    return out


def running_pids(path: Path) -> set[int]:
    """The pids of the attempts that started and have not ended (by the ledger)."""
    open_runs: dict[tuple[str, int, int], int] = {}
    for line in ledger_lines(path):
        key = (line["job_id"], line["attempt"], line["pid"])
        if line["event"] == "start":
            open_runs[key] = line["pid"]
        else:
            open_runs.pop(key, None)
    return set(open_runs.values())


def most_at_once(spans: list[tuple[float, float, str, Any]]) -> int:
    """The most attempts that ran at the same moment."""
    events = sorted([(s, 1) for s, *_ in spans] + [(e, -1) for _, e, *_ in spans])
    # an end and a start at the same instant: the end first
    events.sort(key=lambda ev: (ev[0], ev[1]))
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


async def wait_all(client: Client, ids: list[str], timeout: float = 60) -> None:
    for job_id in ids:
        await wait_for(client, job_id, {"completed"}, timeout=timeout)


async def enqueue(
    client: Client, n: int, job_type: str, payload: dict[str, Any], **kw: Any
) -> list[str]:
    tasks = [TaskSpec(type=job_type, payload=payload, **kw) for _ in range(n)]
    return [job.id for job in await client.enqueue_many(tasks)]


# -- concurrency ------------------------------------------------------------------------------


async def test_concurrency_limit_holds_across_three_workers_with_sigkills(
    client: Client, workers: WorkerProcs, tmp_path: Path
) -> None:
    # Given 3 worker processes of 4 slots each and 24 jobs of a type limited to 2 at once
    ledger = tmp_path / "ledger"
    procs = [workers.start("--concurrency", "4", *WORKER_ARGS, lease=2.0) for _ in range(3)]
    ids = await enqueue(client, 24, "test_limited_conc", {"ledger": str(ledger), "sleep": 0.4})

    # When, twice, a worker is SIGKILLed while it runs a job (holding a slot), and another
    # worker takes its place
    killed: dict[int, float] = {}
    by_pid = {proc.pid: proc for proc in procs}
    for _ in range(2):
        deadline = time.monotonic() + 30
        victim = None
        while victim is None:
            assert time.monotonic() < deadline, "no worker ran a job"
            # an attempt that started and has not ended, in a worker not killed yet
            for pid in running_pids(ledger):
                if pid in by_pid and pid not in killed:
                    victim = by_pid[pid]
                    break
            else:
                await asyncio.sleep(0.02)
        os.kill(victim.pid, signal.SIGKILL)
        killed[victim.pid] = time.time()
        victim.wait(timeout=10)
        fresh = workers.start("--concurrency", "4", *WORKER_ARGS, lease=2.0)
        by_pid[fresh.pid] = fresh

    # Then every job completes, and never more than 2 ran at once (the handlers' own record;
    # a killed attempt counts as running until its process died)
    await wait_all(client, ids, timeout=90)
    spans = intervals(ledger, killed)
    assert most_at_once(spans) <= 2
    assert len({line["pid"] for line in ledger_lines(ledger)}) >= 3


async def test_a_killed_holders_slot_comes_back_when_its_lease_expires(
    client: Client, workers: WorkerProcs, tmp_path: Path
) -> None:
    # Given a worker running 2 long jobs of a type limited to 2 at once, then SIGKILLed
    ledger = tmp_path / "ledger"
    victim = workers.start("--concurrency", "4", *WORKER_ARGS, lease=2.0)
    await enqueue(client, 2, "test_limited_conc", {"ledger": str(ledger), "sleep": 60}, retries=0)
    deadline = time.monotonic() + 30
    while len(ledger_lines(ledger)) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    killed_at = time.time()

    # When another worker (which fails a job whose lease is lost once) gets a short job
    workers.start(
        "--concurrency", "4", *WORKER_ARGS, lease=2.0, env={"WORKQUEUE_MAX_LOST_LEASES": "1"}
    )
    (short,) = await enqueue(
        client, 1, "test_limited_conc", {"ledger": str(ledger), "sleep": 0, "tag": "short"}
    )

    # Then it starts only once the dead holders' slots came back (lease 2 s + 1 s), and does
    info = await wait_for(client, short, {"completed"}, timeout=30)
    (start,) = [s for s, _e, _id, tag in intervals(ledger) if tag == "short"]
    assert start >= killed_at + 2.0 - 0.5
    assert info.attempts == 1


async def test_limit_keys_are_limited_independently(
    client: Client, workers: WorkerProcs, tmp_path: Path
) -> None:
    # Given one worker of 8 slots and 3 jobs each for customers a and b (limit 2 per key)
    ledger = tmp_path / "ledger"
    workers.start("--concurrency", "8", *WORKER_ARGS)
    ids = []
    for key in ("a", "b"):
        ids += await enqueue(
            client,
            3,
            "test_limited_conc",
            {"ledger": str(ledger), "sleep": 1.0, "tag": key},
            limit_key=key,
        )

    # Then each key ran at most 2 at once, and the keys did not wait for each other
    await wait_all(client, ids)
    spans = intervals(ledger)
    for key in ("a", "b"):
        assert most_at_once([s for s in spans if s[3] == key]) == 2
    assert most_at_once(spans) == 4


async def test_a_held_back_job_uses_no_attempt(
    client: Client, broker: Broker, workers: WorkerProcs, tmp_path: Path
) -> None:
    # Given 6 jobs of a type limited to 2 at once and one worker with 6 slots
    ledger = tmp_path / "ledger"
    workers.start("--concurrency", "6", *WORKER_ARGS)
    ids = await enqueue(client, 6, "test_limited_conc", {"ledger": str(ledger), "sleep": 0.5})

    # Then all complete on their first attempt: attempts 1 and one history entry each,
    # although jobs were held back (the queue's deferred counter)
    await wait_all(client, ids)
    for job_id in ids:
        info = await client.get_job(job_id)
        assert info.attempts == 1
        assert [(h.attempt, h.outcome) for h in info.history] == [(1, "succeeded")]
    assert {line["attempt"] for line in ledger_lines(ledger)} == {1}
    stats = await broker.redis.hgetall(broker.keys("default").stats)
    assert int(stats[b"deferred"]) >= 4
    assert int(stats[b"deferred|test_limited_conc"]) == int(stats[b"deferred"])


# -- rate ---------------------------------------------------------------------------------


async def test_rate_limit_is_kept_within_one_period_across_workers(
    client: Client, workers: WorkerProcs, tmp_path: Path
) -> None:
    # Given 3 workers and 50 jobs of a type limited to 10 starts a second
    ledger = tmp_path / "ledger"
    for _ in range(3):
        workers.start("--concurrency", "8", *WORKER_ARGS)
    await asyncio.sleep(1.0)  # all three fetching
    ids = await enqueue(client, 50, "test_limited_rate", {"ledger": str(ledger)})

    # Then over any stretch of D seconds at most 10 * D + 10 started (a burst of one period,
    # then the steady rate), and the whole took about (50 - 10) / 10 s: not far slower
    await wait_all(client, ids)
    starts = sorted(s for s, *_ in intervals(ledger))
    assert len(starts) == 50
    slack = 0.05  # the handlers' clock reads vs Redis's
    for i in range(len(starts)):
        for j in range(i + 1, len(starts)):
            assert j - i + 1 <= 10 * (starts[j] - starts[i] + slack) + 10
    took = starts[-1] - starts[0]
    assert 4.0 - 0.2 <= took <= 4.0 + 4.0
    assert {line["attempt"] for line in ledger_lines(ledger)} == {1}


# -- no hot loop ----------------------------------------------------------------------------


@pytest.fixture
def private(tmp_path: Path) -> Any:
    srv = RedisServer(tmp_path / "redis", appendonly=False)
    (tmp_path / "redis").mkdir()
    srv.start()
    yield srv
    srv.close()


async def test_held_back_jobs_are_not_fetched_in_a_hot_loop(
    installed_test_plugin: None, private: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    # Given a worker on a private Redis and 8 jobs of a type limited (at run time) to 1 start
    # per second and 1 at a time: they take about 8 s
    ledger = tmp_path / "ledger"
    limits_cli(
        key_prefix,
        "set",
        "test_limited_open",
        "--rate",
        "1/s",
        "--concurrency",
        "1",
        url=private.url,
    )
    broker = Broker(create_redis(private.url), BrokerConfig(prefix=key_prefix))
    client = Client(broker, build_registry(only=[TEST_PLUGIN]))
    procs = WorkerProcs(key_prefix, tmp_path)
    try:
        procs.start("--concurrency", "8", *WORKER_ARGS, env={"WORKQUEUE_REDIS_URL": private.url})
        await asyncio.sleep(1.0)
        admin = private.client()
        admin.config_resetstat()
        ids = await enqueue(client, 8, "test_limited_open", {"ledger": str(ledger), "sleep": 0.2})
        await wait_all(client, ids)

        # Then each job was held back a few times at most (not once per fetch loop turn), and
        # the worker's script calls stay in the tens (a hot loop makes thousands in 8 s)
        stats = admin.hgetall(f"{key_prefix}:{{default}}:stats")
        deferred = int(stats.get(b"deferred", 0))
        assert 7 <= deferred <= 8 * 3
        calls = int(admin.info("commandstats")["cmdstat_evalsha"]["calls"])
        print(f"held back {deferred} times, {calls} script calls for 8 jobs")
        assert calls < 400, calls
        spans = intervals(ledger)
        assert most_at_once(spans) == 1
        admin.close()
    finally:
        procs.stop_all()
        await broker.aclose()


# -- run-time changes -----------------------------------------------------------------------


async def test_running_workers_follow_run_time_limits(
    client: Client, workers: WorkerProcs, key_prefix: str, tmp_path: Path
) -> None:
    # Given 2 running workers and a type with no declared limit
    for _ in range(2):
        workers.start("--concurrency", "4", *WORKER_ARGS)
    await asyncio.sleep(1.0)

    # When an operator limits it to 1 at a time, and the workers had time to read it
    answer = limits_cli(key_prefix, "set", "test_limited_open", "--concurrency", "1")
    assert answer["runtime"] == {"rate": None, "concurrency": 1}
    await asyncio.sleep(REFRESH_SECONDS + 1.0)
    first = tmp_path / "first"
    ids = await enqueue(client, 5, "test_limited_open", {"ledger": str(first), "sleep": 0.3})
    await wait_all(client, ids)

    # Then its jobs ran one at a time
    assert most_at_once(intervals(first)) == 1
    (row,) = [r for r in limits_cli(key_prefix, "list") if r["type"] == "test_limited_open"]
    assert row["effective"] == {"rate": None, "concurrency": 1}

    # When the run-time limit is cleared
    assert limits_cli(key_prefix, "clear", "test_limited_open")["cleared"] is True
    await asyncio.sleep(REFRESH_SECONDS + 1.0)
    second = tmp_path / "second"
    ids = await enqueue(client, 6, "test_limited_open", {"ledger": str(second), "sleep": 1.0})
    await wait_all(client, ids)

    # Then they run side by side again
    assert most_at_once(intervals(second)) >= 3


async def test_raising_a_rate_at_run_time_wakes_the_jobs_parked_under_the_old_one(
    client: Client, workers: WorkerProcs, key_prefix: str, tmp_path: Path
) -> None:
    # Given a type limited at run time to 1 start a minute, and 5 jobs parked behind it
    limits_cli(key_prefix, "set", "test_limited_open", "--rate", "1/m")
    workers.start("--concurrency", "4", *WORKER_ARGS)
    ledger = tmp_path / "ledger"
    ids = await enqueue(client, 5, "test_limited_open", {"ledger": str(ledger)})
    deadline = time.monotonic() + 20
    while (await client.broker.queue_figures(["default"])).queues[0].scheduled < 4:
        assert time.monotonic() < deadline, "the jobs were not held back"
        await asyncio.sleep(0.1)

    # When the rate is raised to 100 a second
    limits_cli(key_prefix, "set", "test_limited_open", "--rate", "100/s")

    # Then the parked jobs run within the workers' refresh, not minutes later
    await wait_all(client, ids, timeout=REFRESH_SECONDS + 10)
    assert {line["attempt"] for line in ledger_lines(ledger)} == {1}


def test_bad_limits_are_refused_with_a_clear_message(key_prefix: str) -> None:
    env = {**os.environ, "WORKQUEUE_KEY_PREFIX": key_prefix, "WORKQUEUE_REDIS_URL": REDIS_URL}
    for args, needle in (
        (["--rate", "5/d"], "write <count>/<unit>"),
        (["--rate", "0/s"], "count must be 1"),
        (["--concurrency", "0"], "must be 1 to"),
        ([], "give --rate and/or --concurrency"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "workqueue", "limits", "set", "some_type", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2
        assert needle in done.stderr
    conn = redis.Redis.from_url(REDIS_URL)
    try:
        assert conn.exists(f"{key_prefix}:limits") == 0
    finally:
        conn.close()
