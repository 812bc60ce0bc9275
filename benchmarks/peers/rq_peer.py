"""RQ: ``rq worker`` (forks a work horse per job, its normal mode); bulk: ``Queue.enqueue_many``
with a pipeline. Each job counts itself with an INCR (the horse exits right after the job)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from _count import done
from redis import Redis
from rq import Queue

DIST = "rq"
BULK = True
URL = os.environ["BENCH_REDIS_URL"]
CHUNK = 1000


def noop() -> None:
    done()


def enqueue(n: int, mode: str) -> float:
    queue = Queue("default", connection=Redis.from_url(URL))
    start = time.perf_counter()
    if mode == "single":
        for _ in range(n):
            queue.enqueue(noop)
    else:
        for first in range(0, n, CHUNK):
            count = min(CHUNK, n - first)
            with queue.connection.pipeline() as pipe:
                queue.enqueue_many([Queue.prepare_data(noop) for _ in range(count)], pipeline=pipe)
                pipe.execute()
    return time.perf_counter() - start


def worker_argv(processes: int) -> list[list[str]]:
    exe = str(Path(sys.executable).parent / "rq")
    return [[exe, "worker", "--url", URL, "--quiet", "default"] for _ in range(processes)]
