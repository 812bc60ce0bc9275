"""Job types for the worker and plugin-discovery tests. Each does one thing tests can observe."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

import msgspec

from workqueue import Backoff, JobContext, JobType, PermanentError, hookimpl


class AddPayload(msgspec.Struct):
    a: int
    b: int


async def echo(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Return the payload unchanged."""
    return payload


def sync_add(payload: AddPayload, ctx: JobContext) -> int:
    """A plain ``def`` handler with a typed payload: return ``a + b``."""
    return payload.a + payload.b


async def fail(payload: dict[str, Any], ctx: JobContext) -> None:
    """Fail every attempt with a retryable error."""
    raise ValueError(f"test_fail always fails (attempt {ctx.attempt})")


async def permanent(payload: dict[str, Any], ctx: JobContext) -> None:
    """Fail for good on the first attempt."""
    raise PermanentError("test_permanent never retries")


async def sleep(payload: dict[str, Any], ctx: JobContext) -> None:
    """Sleep ``payload["seconds"]`` in the event loop."""
    await asyncio.sleep(float(payload["seconds"]))


async def record(payload: dict[str, Any], ctx: JobContext) -> str:
    """Append ``{job_id, attempt, pid}`` as a JSON line to ``payload["ledger"]``, then sleep
    ``payload.get("sleep", 0)`` seconds and return ``"ok"``."""
    line = json.dumps({"job_id": ctx.job_id, "attempt": ctx.attempt, "pid": os.getpid()}) + "\n"
    # One write() on an O_APPEND descriptor: lines from several workers never interleave.
    fd = os.open(payload["ledger"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    await asyncio.sleep(float(payload.get("sleep", 0)))
    return "ok"


async def kill_self(payload: dict[str, Any], ctx: JobContext) -> None:
    """SIGKILL the worker process running this job (a crash with the job in flight)."""
    os.kill(os.getpid(), signal.SIGKILL)


def blocking(payload: dict[str, Any], ctx: JobContext) -> None:
    """A plain ``def`` that blocks its thread for ``payload["seconds"]``."""
    time.sleep(float(payload["seconds"]))


async def block_loop(payload: dict[str, Any], ctx: JobContext) -> str:
    """Like ``test_record`` (ledger line first), but then BLOCK the event loop: ``time.sleep``
    of ``payload["seconds"]`` inside an ``async def`` (a badly written plugin)."""
    line = json.dumps({"job_id": ctx.job_id, "attempt": ctx.attempt, "pid": os.getpid()}) + "\n"
    fd = os.open(payload["ledger"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    time.sleep(float(payload["seconds"]))
    return "ok"


@hookimpl
def workqueue_job_types() -> list[JobType]:
    return [
        JobType(name="test_echo", handler=echo, description="return the payload"),
        JobType(
            name="test_sync_add",
            handler=sync_add,
            payload_schema=AddPayload,
            description="return a + b",
        ),
        JobType(
            name="test_fail",
            handler=fail,
            backoff=Backoff(base_seconds=0.2, factor=2.0, jitter=0.5),
            description="always raise ValueError (fast backoff: 0.1-0.2 s, then doubling)",
        ),
        JobType(name="test_permanent", handler=permanent, description="raise PermanentError"),
        JobType(name="test_sleep", handler=sleep, description="sleep payload.seconds"),
        JobType(
            name="test_record",
            handler=record,
            description="append {job_id, attempt, pid} to payload.ledger, sleep payload.sleep",
        ),
        JobType(name="test_kill_self", handler=kill_self, description="SIGKILL the worker"),
        JobType(name="test_blocking", handler=blocking, description="time.sleep in a thread"),
        JobType(
            name="test_block_loop",
            handler=block_loop,
            description="ledger line, then time.sleep in the event loop (blocks it)",
        ),
    ]
