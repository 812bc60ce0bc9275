"""Celery: ``celery -A celery_peer worker --concurrency P`` (prefork pool, Redis broker, results
ignored); no bulk enqueue API (a group still publishes one message per task)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from _count import done
from celery import Celery

DIST = "celery"
BULK = False

app = Celery("celery_peer", broker=os.environ["BENCH_REDIS_URL"])
app.conf.task_ignore_result = True
app.conf.worker_hijack_root_logger = False


@app.task(name="noop")
def noop() -> None:
    done()


def enqueue(n: int, mode: str) -> float:
    noop.delay()  # connect (not timed); the harness fills exactly n
    start = time.perf_counter()
    for _ in range(n - 1):
        noop.delay()
    return time.perf_counter() - start


def worker_argv(processes: int) -> list[list[str]]:
    exe = str(Path(sys.executable).parent / "celery")
    argv = [exe, "-A", "celery_peer", "worker", "--concurrency", str(processes)]
    return [[*argv, "--loglevel", "WARNING"]]
