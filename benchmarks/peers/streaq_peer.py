"""streaQ: ``streaq run streaq_peer:worker --workers P``, concurrency 50; bulk:
``Worker.enqueue_many`` (one pipeline per call)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from _count import done
from streaq import Worker

DIST = "streaq"
BULK = True
CHUNK = 1000

worker = Worker(redis_url=os.environ["BENCH_REDIS_URL"], concurrency=50)


@worker.task(ttl=0, max_tries=1)
async def noop() -> None:
    done()


async def _enqueue(n: int, mode: str) -> float:
    async with worker:
        start = time.perf_counter()
        if mode == "single":
            for _ in range(n):
                await noop.enqueue()
        else:
            for first in range(0, n, CHUNK):
                count = min(CHUNK, n - first)
                await worker.enqueue_many([noop.enqueue() for _ in range(count)])
        return time.perf_counter() - start


def enqueue(n: int, mode: str) -> float:
    return asyncio.run(_enqueue(n, mode))


def worker_argv(processes: int) -> list[list[str]]:
    exe = str(Path(sys.executable).parent / "streaq")
    return [[exe, "run", "streaq_peer:worker", "--workers", str(processes)]]
