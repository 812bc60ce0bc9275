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


def _ledger_line(path: str, ctx: JobContext, event: str) -> None:
    line = json.dumps(
        {
            "job_id": ctx.job_id,
            "attempt": ctx.attempt,
            "token": getattr(ctx, "token", None),  # None on a core without ctx.token
            "pid": os.getpid(),
            "event": event,
        }
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


async def attempt_sleep(payload: dict[str, Any], ctx: JobContext) -> str:
    """Ledger line ``start`` (with ``ctx.token``), sleep ``payload["sleeps"][attempt - 1]``
    seconds (the last entry for later attempts) in the loop, ledger line ``end``; a cancelled
    attempt writes ``cancelled`` instead of ``end``."""
    _ledger_line(payload["ledger"], ctx, "start")
    sleeps = payload["sleeps"]
    try:
        await asyncio.sleep(float(sleeps[min(ctx.attempt, len(sleeps)) - 1]))
    except asyncio.CancelledError:
        _ledger_line(payload["ledger"], ctx, "cancelled")
        raise
    _ledger_line(payload["ledger"], ctx, "end")
    return "ok"


def hang(payload: dict[str, Any], ctx: JobContext) -> str:
    """A plain ``def`` that ignores its timeout: ``time.sleep(payload["seconds"])`` in one go,
    then a ledger line saying whether ``ctx.cancelled`` was set by then."""
    time.sleep(float(payload["seconds"]))
    if "ledger" in payload:
        _ledger_line(
            payload["ledger"], ctx, "cancelled" if getattr(ctx, "cancelled", False) else "end"
        )
    return "ok"


def spin(payload: dict[str, Any], ctx: JobContext) -> None:
    """Spin the CPU until killed (run with ``isolation="process"``)."""
    while True:
        pass


def isolated_add(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Return ``a + b`` and the pid of the (child) process that computed it."""
    return {"sum": payload["a"] + payload["b"], "pid": os.getpid()}


def isolated_fail(payload: dict[str, Any], ctx: JobContext) -> None:
    """Raise a ValueError in the child process."""
    raise ValueError("isolated failure")


async def progress_loop(payload: dict[str, Any], ctx: JobContext) -> dict[str, int]:
    """Ledger line ``start``; then ``ctx.set_progress({"step": i})`` every 0.02 s for
    ``payload["seconds"]`` (a tight loop: the worker coalesces it); ledger ``cancelled``
    when cancelled, else ``end`` and the result ``{"steps": <last step>}``."""
    _ledger_line(payload["ledger"], ctx, "start")
    deadline = time.monotonic() + float(payload["seconds"])
    step = 0
    try:
        while time.monotonic() < deadline:
            step += 1
            ctx.set_progress({"step": step})
            await asyncio.sleep(0.02)
    except asyncio.CancelledError:
        _ledger_line(payload["ledger"], ctx, "cancelled")
        raise
    _ledger_line(payload["ledger"], ctx, "end")
    return {"steps": step}


def poll_cancel(payload: dict[str, Any], ctx: JobContext) -> str:
    """A plain ``def`` that works in steps until ``ctx.cancelled`` (at most
    ``payload["seconds"]``), reporting each step with ``ctx.set_progress(step)``; ledger
    ``start``, then ``cancelled`` when it saw the flag, else ``end``."""
    _ledger_line(payload["ledger"], ctx, "start")
    deadline = time.monotonic() + float(payload["seconds"])
    step = 0
    while time.monotonic() < deadline:
        if ctx.cancelled:
            _ledger_line(payload["ledger"], ctx, "cancelled")
            return "stopped"
        step += 1
        ctx.set_progress(step)
        time.sleep(0.02)
    _ledger_line(payload["ledger"], ctx, "end")
    return "ok"


def _control_types() -> list[JobType]:
    """Job types of the job-control tests (none on a core without ``ctx.set_progress``)."""
    if not hasattr(JobContext, "set_progress"):
        return []
    return [
        JobType(
            name="test_progress_loop",
            handler=progress_loop,
            retries=0,
            description="set_progress in a tight loop for payload.seconds (async)",
        ),
        JobType(
            name="test_poll_cancel",
            handler=poll_cancel,
            retries=0,
            description="plain def polling ctx.cancelled, reporting progress",
        ),
    ]


def _isolated_types() -> list[JobType]:
    """Job types run in a child process (none on a core without ``JobType.isolation``, so
    the regression tests of the other job types also run against an older core)."""
    if "isolation" not in JobType.__dataclass_fields__:
        return []
    return [
        JobType(
            name="test_spin",
            handler=spin,
            isolation="process",
            description="spin the CPU forever in a child process",
        ),
        JobType(
            name="test_isolated_add",
            handler=isolated_add,
            isolation="process",
            description="a + b computed in a child process",
        ),
        JobType(
            name="test_isolated_fail",
            handler=isolated_fail,
            isolation="process",
            retries=0,
            description="raise ValueError in a child process",
        ),
    ]


async def limited(payload: dict[str, Any], ctx: JobContext) -> str:
    """Ledger lines ``start`` and ``end`` with wall-clock times (``t``) and ``payload.tag``
    around a sleep of ``payload.get("sleep", 0)`` seconds: the handler's own record of when
    it ran, for the limit tests."""
    for event in ("start", "end"):
        if event == "end":
            await asyncio.sleep(float(payload.get("sleep", 0)))
        line = json.dumps(
            {
                "job_id": ctx.job_id,
                "attempt": ctx.attempt,
                "pid": os.getpid(),
                "event": event,
                "t": time.time(),
                "tag": payload.get("tag"),
            }
        )
        fd = os.open(payload["ledger"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
    return "ok"


def _limited_types() -> list[JobType]:
    """Job types with fleet-wide limits (none on a core without them)."""
    if "rate_limit" not in JobType.__dataclass_fields__:
        return []
    return [
        JobType(
            name="test_limited_conc",
            handler=limited,
            concurrency_limit=2,
            description="ledger start/end lines around payload.sleep; at most 2 at once",
        ),
        JobType(
            name="test_limited_rate",
            handler=limited,
            rate_limit="10/s",
            description="ledger start/end lines around payload.sleep; at most 10 starts/s",
        ),
        JobType(
            name="test_limited_open",
            handler=limited,
            description="ledger start/end lines; no declared limit (tests set one at run time)",
        ),
    ]


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
        JobType(
            name="test_attempt_sleep",
            handler=attempt_sleep,
            description="ledger start/end lines with ctx.token; sleep payload.sleeps[attempt-1]",
        ),
        JobType(name="test_hang", handler=hang, description="plain def ignoring its timeout"),
        *_isolated_types(),
        *_control_types(),
        *_limited_types(),
    ]
