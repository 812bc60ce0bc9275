"""Huey: ``huey_consumer huey_peer.huey -k process -w P`` (Redis storage); no bulk enqueue API."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from _count import done
from huey import RedisHuey

DIST = "huey"
BULK = False

huey = RedisHuey("bench", url=os.environ["BENCH_REDIS_URL"], results=False)


@huey.task()
def noop() -> None:
    done()


def enqueue(n: int, mode: str) -> float:
    start = time.perf_counter()
    for _ in range(n):
        noop()
    return time.perf_counter() - start


def worker_argv(processes: int) -> list[list[str]]:
    exe = str(Path(sys.executable).parent / "huey_consumer")
    return [[exe, "huey_peer.huey", "-k", "process", "-w", str(processes), "-q"]]
