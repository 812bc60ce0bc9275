"""Taskiq with taskiq-redis's RedisStreamBroker (acknowledged, at-least-once):
``taskiq worker taskiq_peer:broker --workers P --max-async-tasks 50``; no bulk enqueue API.

The consumer group starts at the stream's beginning (``consumer_id="0"``): the benchmark fills
the queue before the workers start, and the default ``"$"`` would skip those jobs."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from _count import done
from taskiq_redis import RedisStreamBroker

DIST = "taskiq"
BULK = False

broker = RedisStreamBroker(os.environ["BENCH_REDIS_URL"], consumer_id="0")


@broker.task
async def noop() -> None:
    done()


async def _enqueue(n: int, mode: str) -> float:
    await broker.startup()
    start = time.perf_counter()
    if mode == "fill":  # untimed: fills the queue faster, 200 calls in flight
        for first in range(0, n, 200):
            await asyncio.gather(*(noop.kiq() for _ in range(min(200, n - first))))
    else:
        for _ in range(n):
            await noop.kiq()
    seconds = time.perf_counter() - start
    await broker.shutdown()
    return seconds


def enqueue(n: int, mode: str) -> float:
    return asyncio.run(_enqueue(n, mode))


def worker_argv(processes: int) -> list[list[str]]:
    exe = str(Path(sys.executable).parent / "taskiq")
    return [
        [
            exe,
            "worker",
            "taskiq_peer:broker",
            "--workers",
            str(processes),
            "--max-async-tasks",
            "50",
            "--log-level",
            "WARNING",
        ]
    ]
