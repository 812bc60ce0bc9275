"""arq: asyncio worker (``arq arq_peer.WorkerSettings``), max_jobs 50; no bulk enqueue API."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from _count import done
from arq import create_pool
from arq.connections import RedisSettings

DIST = "arq"
BULK = False
REDIS = RedisSettings.from_dsn(os.environ["BENCH_REDIS_URL"])


async def noop(ctx: dict[str, Any]) -> None:
    done()


class WorkerSettings:
    functions = [noop]
    redis_settings = REDIS
    max_jobs = 50
    keep_result = 0


async def _enqueue(n: int, mode: str) -> float:
    pool = await create_pool(REDIS)
    start = time.perf_counter()
    if mode == "fill":  # untimed: fills the queue faster, 200 calls in flight
        for first in range(0, n, 200):
            await asyncio.gather(*(pool.enqueue_job("noop") for _ in range(min(200, n - first))))
    else:
        for _ in range(n):
            await pool.enqueue_job("noop")
    seconds = time.perf_counter() - start
    await pool.aclose()
    return seconds


def enqueue(n: int, mode: str) -> float:
    return asyncio.run(_enqueue(n, mode))


def worker_argv(processes: int) -> list[list[str]]:
    exe = str(Path(sys.executable).parent / "arq")
    return [[exe, "arq_peer.WorkerSettings"] for _ in range(processes)]
