"""Soak: a million no-op jobs leave Redis memory and worker memory where they started.

Run by ``nox -s soak`` (``pytest -m soak tests/faults``), never in the default run. One million
``test_echo`` jobs go through a private redis-server with 3 worker subprocesses keeping
completed jobs for 5 s only; the test keeps at most ``MAX_BACKLOG`` jobs waiting (it enqueues
in chunks with ``Client.enqueue_many`` as the workers drain). Proves:

- once the retention has passed, Redis ``used_memory`` is back within ``REDIS_BOUND_BYTES`` of
  its baseline (taken with the workers up and the scripts loaded), and no job key is left;
- each worker's RSS stops growing after warm-up: the end sample is within ``RSS_BOUND_KIB`` of
  the sample taken once ``WARMUP_FRACTION`` of the jobs were done.

``WQ_SOAK_JOBS`` overrides the number of jobs (for a quick trial). The figures are printed.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from loadkit import RedisFactory, figures, make_client, status_kib, wait_until
from services import Services

pytestmark = pytest.mark.soak

N_JOBS = int(os.environ.get("WQ_SOAK_JOBS", "1000000"))
WORKERS = 3
CHUNK = 1000
MAX_BACKLOG = 50_000
COMPLETED_TTL_S = 5
WARMUP_FRACTION = 0.2
REDIS_BOUND_BYTES = 2 * 1024 * 1024
RSS_BOUND_KIB = 8 * 1024
SAMPLE_EVERY_S = 5.0


def used_memory(info: dict[str, object]) -> int:
    value = info["used_memory"]
    assert isinstance(value, int)
    return value


@pytest.mark.timeout(3 * 3600)
async def test_a_million_jobs_leave_memory_flat(
    redis_factory: RedisFactory, services: Services, key_prefix: str, tmp_path: Path
) -> None:
    server = redis_factory(appendonly=False)
    client = make_client(server.url, key_prefix)
    admin_redis = server.client()
    env = {
        "WORKQUEUE_COMPLETED_TTL": str(COMPLETED_TTL_S),
        "WORKQUEUE_LOG_LEVEL": "WARNING",
        "WORKQUEUE_IDLE_WAIT_SECONDS": "1",
    }
    workers = [services.worker(server.url, lease=10.0, env=env) for _ in range(WORKERS)]
    # Baseline: workers registered, scripts loaded, a first job through, its record expired
    await client.enqueue("test_echo", {})

    async def first_done() -> bool:
        return bool((await figures(client))["jobs_done"] == 1)

    await wait_until(first_done, 60, "the first job")
    await asyncio.sleep(COMPLETED_TTL_S + 2)
    baseline = used_memory(admin_redis.info("memory"))

    started = time.monotonic()
    enqueued = 1
    peak = baseline
    rss: dict[int, list[tuple[int, int]]] = {w.pid: [] for w in workers}  # pid -> (done, KiB)
    warm: dict[int, int] = {}
    next_sample = 0.0
    done = 1
    while done < N_JOBS:
        for w in workers:
            assert w.alive(), f"worker died:\n{w.log()[-3000:]}"
        stats = await figures(client)
        done = stats["jobs_done"]
        backlog = enqueued - done
        for _ in range(10):  # at most 10 chunks between two looks at the figures
            if enqueued >= N_JOBS or backlog >= MAX_BACKLOG:
                break
            n = min(CHUNK, N_JOBS - enqueued)
            await client.enqueue_many([("test_echo", {})] * n)
            enqueued += n
            backlog += n
        now = time.monotonic()
        if now >= next_sample:
            next_sample = now + SAMPLE_EVERY_S
            peak = max(peak, used_memory(admin_redis.info("memory")))
            for w in workers:
                rss[w.pid].append((done, status_kib(w.pid)))
        if done >= WARMUP_FRACTION * N_JOBS and not warm:
            warm = {w.pid: status_kib(w.pid) for w in workers}
        assert now - started < 3 * 3600 - 600, f"only {done}/{N_JOBS} done"
        await asyncio.sleep(0.2 if backlog >= MAX_BACKLOG else 0.01)
    drained = time.monotonic() - started
    end_rss = {w.pid: status_kib(w.pid) for w in workers}

    # Retention passes; the workers stay idle, housekeeping runs
    await asyncio.sleep(COMPLETED_TTL_S + 5)
    after = used_memory(admin_redis.info("memory"))
    stats = await figures(client)
    left = sum(1 for _ in admin_redis.scan_iter(match=f"{key_prefix}:*:job:*", count=10_000))
    sizes = {
        name: admin_redis.zcard(getattr(client.broker.keys("default"), name))
        for name in ("completed", "failed", "active")
    }
    admin_redis.close()
    await client.aclose()
    print(
        f"\nFIGURES soak: jobs={N_JOBS} drained_in={drained:.0f}s "
        f"({N_JOBS / drained:.0f} jobs/s) redis used_memory baseline={baseline} peak={peak} "
        f"after={after} (delta {after - baseline:+d} B) job keys left={left} indexes={sizes}"
    )
    for pid, samples in rss.items():
        print(f"FIGURES soak rss pid={pid} warm={warm.get(pid)} end={end_rss[pid]} KiB")
        print(f"  samples (done, KiB): {samples[:: max(1, len(samples) // 20)]}")
    assert stats["jobs_done"] == N_JOBS and stats["enqueued"] == N_JOBS
    assert stats["jobs_failed"] == 0 and stats["total_jobs_in_queue"] == 0
    assert left == 0 and sizes == {"completed": 0, "failed": 0, "active": 0}
    assert after - baseline <= REDIS_BOUND_BYTES
    for pid, end in end_rss.items():
        assert end - warm[pid] <= RSS_BOUND_KIB, f"worker {pid} grew from {warm[pid]} to {end}"
