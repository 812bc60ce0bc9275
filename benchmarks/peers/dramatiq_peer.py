"""Dramatiq: ``dramatiq dramatiq_peer --processes P`` (8 threads each, its default); no bulk
enqueue API."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import dramatiq
from _count import done
from dramatiq.brokers.redis import RedisBroker

DIST = "dramatiq"
BULK = False

broker = RedisBroker(url=os.environ["BENCH_REDIS_URL"])
dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0)
def noop() -> None:
    done()


def enqueue(n: int, mode: str) -> float:
    start = time.perf_counter()
    for _ in range(n):
        noop.send()
    return time.perf_counter() - start


def worker_argv(processes: int) -> list[list[str]]:
    exe = str(Path(sys.executable).parent / "dramatiq")
    return [[exe, "dramatiq_peer", "--processes", str(processes)]]
