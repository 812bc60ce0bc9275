"""T15 and T16: worker clocks that disagree, and delays much longer than a lease.

T15 runs two real worker processes against one queue, worker A's wall clock 5 minutes ahead,
worker B's 5 minutes behind (libfaketime on the whole process when ``faketime`` is installed;
and, always, the ``WORKQUEUE_CLOCK_SKEW_SECONDS`` knob of ``workqueue.clock``). With a 3 s
lease, jobs that run 7 s (so their leases are renewed twice over) must each run once, with
no lease ever recovered or refused as stale; delayed jobs must start at their due time on
Redis' clock (not early, at most 1 s late), once; and both workers must stay in the worker
registry all along (neither evicts the other as dead).

T16 runs three workers with a 1 s lease and jobs delayed 8 s: while a job waits it is never
handed out (its record stays ``scheduled`` and the ledger has no line for it), then it runs
exactly once, at its due time.

Times are compared on Redis' clock only (the records' ``run_at`` and ``started_at``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from services import Proc, Services, read_ledger

from workqueue.broker import Broker
from workqueue.client import Client

pytestmark = pytest.mark.slow

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
SKEW_S = 300
#: lines a worker logs when a lease was lost, recovered or an outcome refused
LEASE_TROUBLE = ("stale lease", "lease lost", "recovered after a lost lease", "failed for good")


def skewed_env(mode: str, seconds: int) -> dict[str, str]:
    """Environment that moves a worker's wall clock by ``seconds``."""
    if mode == "faketime":
        return {
            "LD_PRELOAD": str(FAKETIME_LIB),
            "FAKETIME": f"{seconds:+d}s",
            # A skewed wall clock; the monotonic clock of the host is left alone.
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }
    return {"WORKQUEUE_CLOCK_SKEW_SECONDS": str(seconds)}


async def redis_ms(broker: Broker) -> int:
    seconds, micros = await broker.redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def records(broker: Broker, queue: str, ids: list[str]) -> dict[str, dict[str, str]]:
    async with broker.redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hgetall(broker.keys(queue).job(job_id))
        replies = await pipe.execute()
    return {
        job_id: {k.decode(): v.decode() for k, v in reply.items()}
        for job_id, reply in zip(ids, replies, strict=True)
    }


async def wait_all_completed(
    broker: Broker, queue: str, ids: list[str], procs: list[Proc], timeout: float
) -> dict[str, dict[str, str]]:
    deadline = time.monotonic() + timeout
    while True:
        recs = await records(broker, queue, ids)
        if all(r.get("status") == "completed" for r in recs.values()):
            return recs
        for proc in procs:
            assert proc.alive(), f"worker died:\n{proc.log()[-3000:]}"
        if time.monotonic() > deadline:
            statuses = {i: r.get("status") for i, r in recs.items()}
            logs = "\n".join(p.log()[-2000:] for p in procs)
            raise AssertionError(f"jobs not completed in {timeout}s: {statuses}\n{logs}")
        await asyncio.sleep(0.25)


def firing_errors_ms(recs: dict[str, dict[str, str]], ids: list[str]) -> list[int]:
    """started_at - run_at (ms, both Redis time) of each delayed job."""
    return [int(recs[i]["started_at"]) - int(recs[i]["run_at"]) for i in ids]


def assert_ran_once(recs: dict[str, dict[str, str]], ledger: Path, procs: list[Proc]) -> None:
    runs = read_ledger(ledger)
    assert set(runs) == set(recs), "a job never ran (or the ledger holds a foreign id)"
    duplicates = {i: n for i, n in runs.items() if n != 1}
    assert not duplicates, f"jobs ran more than once: {duplicates}"
    for job_id, rec in recs.items():
        assert (rec["attempts"], rec["lost"], rec["failures"]) == ("1", "0", "0"), (job_id, rec)
    for proc in procs:
        log = proc.log()
        trouble = [line for line in log.splitlines() if any(t in line for t in LEASE_TROUBLE)]
        assert not trouble, f"lease trouble in a worker's log: {trouble[:5]}"


def worker_ids(procs: list[Proc], members: list[bytes]) -> set[int]:
    """Which of ``procs`` (by pid) are in the worker registry."""
    names = [m.decode() for m in members]
    return {p.pid for p in procs if any(f"-{p.pid}-" in n for n in names)}


async def wait_registered(broker: Broker, procs: list[Proc], timeout: float = 30) -> None:
    """Wait until every worker has sent its first heartbeat (it is then fetching)."""
    deadline = time.monotonic() + timeout
    pids = {p.pid for p in procs}
    while worker_ids(procs, await broker.redis.zrange(broker.globals.workers, 0, -1)) != pids:
        for proc in procs:
            assert proc.alive(), proc.log()[-3000:]
        assert time.monotonic() < deadline, "workers did not register"
        await asyncio.sleep(0.1)


MODES = [
    pytest.param(
        "faketime",
        marks=pytest.mark.skipif(
            shutil.which("faketime") is None or not FAKETIME_LIB.exists(),
            reason="not run here: libfaketime is not installed (apt-get install faketime)",
        ),
    ),
    "knob",
]


@pytest.mark.parametrize("mode", MODES)
async def test_skewed_worker_clocks_neither_reclaim_nor_fire_early(
    mode: str, services: Services, client: Client, broker: Broker, redis_url: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.jsonl"
    queue = "skew"
    # five slots each: six long jobs need both workers and leave four slots for delayed jobs
    args = ("-q", queue, "-c", "5", "--idle-wait-seconds", "5")
    # Given worker A 5 minutes ahead and worker B 5 minutes behind, 3 s leases
    a = services.worker(redis_url, *args, lease=3.0, env=skewed_env(mode, SKEW_S))
    b = services.worker(redis_url, *args, lease=3.0, env=skewed_env(mode, -SKEW_S))
    procs = [a, b]
    await wait_registered(broker, procs)
    # When six jobs run 7 s each (two lease periods and more, renewed), and six wait 4-5 s
    specs: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    specs += [("test_record", {"ledger": str(ledger), "sleep": 7}, {})] * 6
    now = await redis_ms(broker)
    for n in range(3):
        specs.append(("test_record", {"ledger": str(ledger), "n": n}, {"delay": 4 + n * 0.3}))
    for n in range(3):
        run_at_ms = now + 5000 + n * 300  # an absolute time on Redis' clock
        run_at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(run_at_ms // 1000))
        run_at += f".{run_at_ms % 1000:03d}Z"
        specs.append(("test_record", {"ledger": str(ledger), "m": n}, {"run_at": run_at}))
    jobs = [await client.enqueue(t, p, queue=queue, **kw) for t, p, kw in specs]
    ids = [j.id for j in jobs]
    delayed = ids[6:]
    # (the registry is sampled while they run: both workers must stay in it)
    registry = broker.globals.workers
    samples: list[set[int]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        recs = await records(broker, queue, ids)
        if all(r.get("status") == "completed" for r in recs.values()):
            break
        samples.append(worker_ids(procs, await broker.redis.zrange(registry, 0, -1)))
        await asyncio.sleep(0.3)
    recs = await wait_all_completed(broker, queue, ids, procs, timeout=10)
    # Then the clocks really were skewed (each worker advertises its own wall clock)
    real_s = await redis_ms(broker) / 1000
    adverts = [k async for k in broker.redis.scan_iter(match=broker.globals.worker("*"))]
    for proc, skew in ((a, SKEW_S), (b, -SKEW_S)):
        (key,) = [k for k in adverts if f"-{proc.pid}-" in k.decode()]
        advert = json.loads(await broker.redis.get(key))
        assert abs(advert["started_at"] - (real_s + skew)) < 60, (advert, real_s, skew)
    # and every job ran exactly once, no lease lost, no outcome refused
    assert_ran_once(recs, ledger, procs)
    stats = await broker.queue_stats(queue)
    assert stats.get("lost_leases", 0) == 0 and stats["done"] == len(ids), stats
    # and both workers ran long jobs
    pids = {json.loads(line)["pid"] for line in ledger.read_text().splitlines()}
    assert pids == {a.pid, b.pid}
    # and delayed jobs started at their Redis-time due time (not early, at most 1 s late)
    errors = firing_errors_ms(recs, delayed)
    assert all(0 <= e <= 1000 for e in errors), errors
    # and heartbeats are stamped on Redis' clock, so neither worker evicts the other as dead
    scores = dict(await broker.redis.zrange(registry, 0, -1, withscores=True))
    stamps = {p.pid: s for p in procs for n, s in scores.items() if f"-{p.pid}-" in n.decode()}
    assert stamps.keys() == {a.pid, b.pid}, f"a live worker is missing from the registry: {scores}"
    assert all(abs(s - real_s * 1000) < 15_000 for s in stamps.values()), (stamps, real_s)
    seen_both = [i for i, s in enumerate(samples) if s == {a.pid, b.pid}]
    assert seen_both, f"the workers never registered together: {samples}"
    after = samples[seen_both[0] :]
    missing = [s for s in after if s != {a.pid, b.pid}]
    assert not missing, f"a live worker vanished from the registry in {len(missing)} samples"
    print(f"T15[{mode}] firing errors ms={errors} registry samples={len(after)}")


async def test_delay_far_beyond_the_lease_runs_once_at_due_time(
    services: Services, client: Client, broker: Broker, redis_url: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.jsonl"
    queue = "later"
    args = ("-q", queue, "-c", "4")
    # Given three workers with a 1 s lease
    procs = [services.worker(redis_url, *args, lease=1.0) for _ in range(3)]
    await wait_registered(broker, procs)
    # When six jobs are enqueued with a delay of 8 s (eight lease periods)
    jobs = [
        await client.enqueue(
            "test_record", {"ledger": str(ledger), "sleep": 0.2}, queue=queue, delay=8 + n * 0.2
        )
        for n in range(6)
    ]
    ids = [j.id for j in jobs]
    # Then while they wait, none is handed out
    while True:
        now = await redis_ms(broker)
        recs = await records(broker, queue, ids)
        waiting = [i for i in ids if int(recs[i]["run_at"]) > now + 50]
        if not waiting:
            break
        ran = read_ledger(ledger)
        for job_id in waiting:
            assert recs[job_id]["status"] == "scheduled", (job_id, recs[job_id])
            assert job_id not in ran, f"{job_id} ran before its due time"
        for proc in procs:
            assert proc.alive(), proc.log()[-3000:]
        await asyncio.sleep(0.25)
    # and each runs exactly once, at its due time (not early, at most 1 s late)
    recs = await wait_all_completed(broker, queue, ids, procs, timeout=30)
    assert_ran_once(recs, ledger, procs)
    errors = firing_errors_ms(recs, ids)
    assert all(0 <= e <= 1000 for e in errors), errors
    stats = await broker.queue_stats(queue)
    assert stats.get("lost_leases", 0) == 0 and stats["done"] == len(ids), stats
    print(f"T16 firing errors ms={errors}")
