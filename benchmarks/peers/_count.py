"""Counting finished jobs of a peer in its own Redis db, so the harness can see the last one.

``done()`` is called by each peer's no-op task. By default it adds to a per-process count that
a daemon thread flushes with one INCRBY every 5 ms (a Redis round trip per job would tax the
peer's drain with work WorkQueue does not do). Peers that run every job in a short-lived child
process (rq forks one per job) set ``BENCH_COUNT=direct``: one INCR per job, before the child
exits. The harness compares the final count with N: every job must have run.
"""

from __future__ import annotations

import os
import threading
import time

import redis

KEY = "bench:done"
URL = os.environ["BENCH_REDIS_URL"]
DIRECT = os.environ.get("BENCH_COUNT") == "direct"

_lock = threading.Lock()
_pending = 0
_owner_pid = -1
_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None or _owner_pid != os.getpid():
        _client = redis.Redis.from_url(URL)
    return _client


def _flusher() -> None:
    global _pending
    client = redis.Redis.from_url(URL)
    while True:
        time.sleep(0.005)
        with _lock:
            count, _pending = _pending, 0
        if count:
            client.incrby(KEY, count)


def done() -> None:
    """One job ran."""
    global _pending, _owner_pid
    if DIRECT:
        _redis().incr(KEY)
        return
    with _lock:
        _pending += 1
        if _owner_pid != os.getpid():  # first job in this process (or in a forked child)
            _owner_pid = os.getpid()
            threading.Thread(target=_flusher, daemon=True, name="bench-count").start()
