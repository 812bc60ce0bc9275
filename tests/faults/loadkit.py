"""Helpers of the load-and-crash fault tests: a client on a private server, the system figures,
the test_record ledger with its pids, and process memory."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis_server import RedisServer
from services import TEST_PLUGIN

from workqueue import admin
from workqueue.broker import Broker, BrokerConfig
from workqueue.broker.connection import create_redis
from workqueue.client import Client
from workqueue.registry import build_registry

#: the ``redis_factory`` fixture's type (defined here: ``from conftest import`` is ambiguous)
RedisFactory = Callable[..., RedisServer]


def make_client(url: str, prefix: str, **config: Any) -> Client:
    """A client of the test plugin's job types on ``url`` under key prefix ``prefix``."""
    broker = Broker(create_redis(url), BrokerConfig(prefix=prefix, **config))
    return Client(broker, build_registry(only=[TEST_PLUGIN]))


async def enqueue_chunked(
    client: Client, tasks: list[tuple[str, Any]], chunk: int = 1000
) -> list[str]:
    """Enqueue ``tasks`` with ``enqueue_many`` in chunks; the job ids, in order."""
    ids: list[str] = []
    for start in range(0, len(tasks), chunk):
        ids += [job.id for job in await client.enqueue_many(tasks[start : start + chunk])]
    return ids


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, poll: float = 0.25
) -> None:
    """Poll ``check`` until it is true; fail after ``timeout`` seconds naming ``what``."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(poll)


async def figures(client: Client) -> dict[str, Any]:
    """The system-wide figures (those of ``workqueue stats`` and ``/metrics``)."""
    return await admin.stats(client.broker)


@dataclass(frozen=True, slots=True)
class Run:
    """One execution of a ``test_record`` job, as its handler wrote it down."""

    job_id: str
    attempt: int
    pid: int


def ledger_runs(path: Path) -> dict[str, list[Run]]:
    """Every execution per job id, ordered by attempt."""
    runs: dict[str, list[Run]] = defaultdict(list)
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                runs[row["job_id"]].append(Run(row["job_id"], int(row["attempt"]), int(row["pid"])))
    for job_runs in runs.values():
        job_runs.sort(key=lambda run: run.attempt)
    return dict(runs)


def unexplained_duplicates(runs: dict[str, list[Run]], killed_pids: set[int]) -> list[str]:
    """The jobs whose repeated executions are NOT each explained by a crash: an execution
    followed by another must have run in a killed worker, and attempts must strictly grow."""
    bad: list[str] = []
    for job_id, job_runs in runs.items():
        attempts = [run.attempt for run in job_runs]
        if len(set(attempts)) != len(attempts):
            bad.append(f"{job_id}: the same attempt ran twice {attempts}")
            continue
        for earlier in job_runs[:-1]:
            if earlier.pid not in killed_pids:
                bad.append(f"{job_id}: attempt {earlier.attempt} ran in live pid {earlier.pid}")
    return bad


def status_kib(pid: int, field: str = "VmRSS") -> int:
    """A ``/proc/<pid>/status`` size field in KiB (0 once the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0
