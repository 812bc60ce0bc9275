"""RELIABILITY-PLAN T1 and T6, the crash cases tests/integration/test_worker.py does not cover.

T1: two workers, 50 jobs sleeping 8 s, lease 2 s; the worker holding 25 is SIGKILLed. Every
job completes exactly once (counter and records), the killed worker's jobs re-run on the other
with their attempt number grown, within lease + slack of the kill, and nothing stays active.

T6: an ``async def`` handler blocks the event loop (``time.sleep``) longer than the lease, so
its lease cannot be renewed and another worker takes the job. Whatever happens next, there is
never a silent double completion: the completed counter is at most 1, each finished execution
is either the one completion or an outcome refused as stale, and the job ends in exactly one
terminal state.

(T3, T4, T5, T7 are covered in tests/integration/test_worker.py; see docs/reliability.md.)
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from loadkit import RedisFactory, figures, ledger_runs, make_client, wait_until
from services import Services

from workqueue.client import Client

pytestmark = pytest.mark.slow


async def workers_registered(client: Client, n: int) -> bool:
    return await client.broker.redis.zcard(client.broker.globals.workers) >= n


@pytest.mark.timeout(120)
async def test_t1_sigkill_worker_holding_jobs_recovers_all_exactly_once(
    redis_factory: RedisFactory, services: Services, key_prefix: str, tmp_path: Path
) -> None:
    lease = 2.0
    server = redis_factory()
    client = make_client(server.url, key_prefix)
    ledger = tmp_path / "ledger.jsonl"

    async def started(n: int) -> bool:
        return sum(len(r) for r in ledger_runs(ledger).values()) >= n

    # Given 50 jobs of 8 s: worker A (25 slots) runs 25, then worker B (50 slots) the rest,
    # so B has room for A's jobs
    victim = services.worker(server.url, lease=lease, env={"WORKQUEUE_CONCURRENCY": "25"})
    await wait_until(lambda: workers_registered(client, 1), 30, "worker A")
    jobs = await client.enqueue_many([("test_record", {"ledger": str(ledger), "sleep": 8})] * 50)
    ids = {job.id for job in jobs}
    await wait_until(lambda: started(25), 30, "A to start 25 jobs", poll=0.05)
    survivor = services.worker(server.url, lease=lease, env={"WORKQUEUE_CONCURRENCY": "50"})
    await wait_until(lambda: started(50), 30, "B to start the other 25", poll=0.05)
    # When A, holding 25 running jobs, is SIGKILLed
    assert (await figures(client))["jobs_done"] == 0
    victim.kill()
    killed_at = time.monotonic()
    runs_now = ledger_runs(ledger)
    lost = {job_id for job_id, runs in runs_now.items() if runs[0].pid == victim.pid}
    assert len(lost) == 25 and len(runs_now) == 50

    # Then each of its jobs starts again on the survivor within lease + slack
    async def rerun() -> bool:
        runs = ledger_runs(ledger)
        return all(len(runs[job_id]) == 2 for job_id in lost)

    await wait_until(rerun, 30, "the killed worker's jobs to re-run", poll=0.05)
    recovery = time.monotonic() - killed_at

    async def all_done() -> bool:
        return bool((await figures(client))["jobs_done"] == 50)

    await wait_until(all_done, 40, "all 50 jobs to complete")
    stats = await figures(client)
    runs = ledger_runs(ledger)
    print(
        f"\nFIGURES T1: jobs=50 held_by_killed={len(lost)} recovery={recovery:.2f}s "
        f"(lease {lease:g}s) done={stats['jobs_done']} executions="
        f"{sum(len(r) for r in runs.values())} lost_leases={stats['lost_leases']}"
    )
    assert recovery <= lease + 3.0
    assert set(runs) == ids
    for job_id, job_runs in runs.items():
        if job_id in lost:
            first, second = job_runs
            assert first.pid == victim.pid and second.pid == survivor.pid
            assert second.attempt == first.attempt + 1
        else:
            assert len(job_runs) == 1 and job_runs[0].pid == survivor.pid
    assert stats["jobs_done"] == 50 and stats["lost_leases"] == len(lost)
    assert stats["running"] == 0 and stats["total_jobs_in_queue"] == 0
    assert stats["jobs_failed"] == 0 and stats["retrying"] == 0
    for job_id in ids:
        info = await client.get_job(job_id)
        assert info.status == "completed"
        assert info.attempts == (2 if job_id in lost else 1)
    await client.aclose()


@pytest.mark.timeout(120)
async def test_t6_handler_blocking_the_loop_past_the_lease_never_completes_twice(
    redis_factory: RedisFactory, services: Services, key_prefix: str, tmp_path: Path
) -> None:
    lease = 1.0
    server = redis_factory()
    client = make_client(server.url, key_prefix)
    workers = [services.worker(server.url, lease=lease) for _ in range(2)]
    await wait_until(lambda: workers_registered(client, 2), 30, "two workers")
    # Given a job whose async handler blocks the event loop for twice the lease
    ledger = tmp_path / "ledger.jsonl"
    job = await client.enqueue(
        "test_block_loop", {"ledger": str(ledger), "seconds": 2 * lease}, retries=0
    )

    # When it runs (its lease cannot be renewed while the loop is blocked)
    async def terminal() -> bool:
        return (await client.get_job(job.id)).status in ("completed", "failed")

    await wait_until(terminal, 60, "a terminal state")

    def reported() -> tuple[int, int]:
        text = "".join(w.log_file.read_text() for w in workers if w.log_file.exists())
        return text.count("succeeded in"), text.count("stale lease: ack refused")

    async def all_reported() -> bool:  # every execution that ran has sent its outcome
        return sum(reported()) >= len(ledger_runs(ledger).get(job.id, []))

    await wait_until(all_reported, 30, "every execution's outcome")
    await asyncio.sleep(2 * lease + 1)  # a late execution would show up now
    info = await client.get_job(job.id)
    stats = await figures(client)
    runs = ledger_runs(ledger)[job.id]
    succeeded, stale = reported()
    print(
        f"\nFIGURES T6: status={info.status} executions={len(runs)} completions={succeeded} "
        f"stale_refused={stale} lost_leases={stats['lost_leases']} error={info.error!r}"
    )
    # Then: never a silent double completion
    assert stats["jobs_done"] == succeeded <= 1
    assert stats["jobs_done"] + stats["jobs_failed"] == 1
    assert succeeded + stale == len(runs)
    assert stats["running"] == 0 and stats["total_jobs_in_queue"] == 0
    if info.status == "completed":
        assert info.attempts == len(runs)
    else:
        assert info.error is not None and "worker lost" in info.error
    for w in workers:
        assert w.alive(), w.log()[-2000:]
    await client.aclose()
