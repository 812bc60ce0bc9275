"""Polling helpers of the worker tests (test_worker.py, test_engine_worker.py)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from workqueue.client import Client
from workqueue.job import JobInfo

__all__ = ["ledger_lines", "log_text", "wait_for", "wait_ledger"]


async def wait_for(client: Client, job_id: str, statuses: set[str], timeout: float = 20) -> JobInfo:
    deadline = time.monotonic() + timeout
    while True:
        info = await client.get_job(job_id)
        if info.status in statuses:
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"job stayed {info.status}, wanted {statuses}: {info}")
        await asyncio.sleep(0.05)


async def log_text(path: Path, needle: str, count: int = 1, timeout: float = 10) -> str:
    """The log once ``needle`` appears ``count`` times: lines reach the file from loguru's writer
    thread a moment after the job's state changed in Redis."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        if text.count(needle) >= count or time.monotonic() > deadline:
            return text
        await asyncio.sleep(0.05)


def ledger_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def wait_ledger(path: Path, n: int, timeout: float = 15) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(lines := ledger_lines(path)) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"ledger has {len(lines)} lines, wanted {n}")
        await asyncio.sleep(0.05)
    return lines
