"""SAQ: ``saq saq_peer.settings --workers P``, concurrency 50; no bulk enqueue API (``Queue.map``
enqueues one by one and then waits for the results)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from _count import done
from saq import Queue

DIST = "saq"
BULK = False
URL = os.environ["BENCH_REDIS_URL"]

queue = Queue.from_url(URL)


async def noop(ctx: dict[str, Any]) -> None:
    done()


settings = {"queue": queue, "functions": [noop], "concurrency": 50}


async def _enqueue(n: int, mode: str) -> float:
    q = Queue.from_url(URL)
    await q.connect()
    start = time.perf_counter()
    if mode == "fill":  # untimed: fills the queue faster, 200 calls in flight
        for first in range(0, n, 200):
            await asyncio.gather(*(q.enqueue("noop") for _ in range(min(200, n - first))))
    else:
        for _ in range(n):
            await q.enqueue("noop")
    seconds = time.perf_counter() - start
    await q.disconnect()
    return seconds


def enqueue(n: int, mode: str) -> float:
    return asyncio.run(_enqueue(n, mode))


def worker_argv(processes: int) -> list[list[str]]:
    exe = str(Path(sys.executable).parent / "saq")
    return [[exe, "saq_peer.settings", "--workers", str(processes)]]
