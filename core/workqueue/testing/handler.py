"""Run one attempt of a job type's handler in a unit test, as a worker would, without Redis.

:func:`run_job` takes a job type (or its name) and a payload, and goes through what a worker
does with a reserved job: the payload is encoded to JSON and validated against the type's
``payload_schema`` (so the handler gets the typed object), a realistic :class:`JobContext` is
built (job id, attempt, fencing token, a logger bound to the job, a ``ctx.cancelled`` flag the
test holds), the handler runs (``async def`` in the loop, plain ``def`` in a thread,
``isolation="process"`` in a child process) under the attempt's timeout, and its return value or
exception becomes what the worker records: the JSON result, or the error line and whether the
job would be retried (and after how long) or fail for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, cast

import msgspec
from loguru import logger

from workqueue.errors import InvalidJobError
from workqueue.jobtypes import CancelFlag, JobContext, JobType
from workqueue.log import sanitize
from workqueue.registry import Registry, build_registry
from workqueue.worker.execution import decode_payload, encode_result, failure_outcome
from workqueue.worker.isolation import run_isolated

if TYPE_CHECKING:
    from loguru import Logger, Message

__all__ = [
    "AttemptResult",
    "CancelSwitch",
    "LogLine",
    "make_context",
    "run_job",
    "run_job_sync",
]

#: the worker's defaults (``WorkerSettings``)
MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_RESULT_BYTES = 1024 * 1024
TEST_WORKER_ID = "test-worker"
#: how long a timed-out plain ``def`` handler's thread is waited for (it should check the flag)
THREAD_GRACE_SECONDS = 5.0


class CancelSwitch(CancelFlag):
    """``ctx.cancelled`` under the test's control, and the progress the handler reports.

    - :meth:`set` only sets the flag, before or during a run: the handler sees it at its next
      check (a plain ``def`` handler is expected to check it between steps).
    - :meth:`cancel` is a cancel request (``POST /jobs/{id}/cancel``) as a worker handles it
      for a running attempt: the flag is set, an ``async def`` handler's task is cancelled, and
      the attempt ends ``"cancelled"`` at once (a plain ``def`` handler's thread is given
      :data:`THREAD_GRACE_SECONDS` to notice the flag and return). Called before
      :func:`run_job`, the handler never runs (a cancelled job is never started).

    Both are safe from any thread (a ``threading.Timer``, the handler's own thread).
    """

    __slots__ = ("_wake", "cancel_requested", "progress")

    def __init__(self) -> None:
        super().__init__()
        #: every value the handler reported with ``ctx.set_progress``, in order (as JSON
        #: values: checked and encoded as the worker does, then read back)
        self.progress: list[Any] = []
        #: whether :meth:`cancel` was called
        self.cancel_requested = False
        self._wake: Callable[[], None] | None = None

    def set(self) -> None:
        """Set the flag (thread-safe: a plain attribute)."""
        self._cancelled = True

    def cancel(self) -> None:
        """Ask for the job to be cancelled, as ``POST /jobs/{id}/cancel`` does."""
        self.cancel_requested = True
        self._cancelled = True
        wake = self._wake
        if wake is not None:
            wake()

    def report_progress(self, encoded: str) -> None:
        """Keep a value ``ctx.set_progress`` checked (a worker would send the latest)."""
        self.progress.append(msgspec.json.decode(encoded))


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line a handler wrote through ``ctx.logger``."""

    level: str
    message: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """How the attempt ended, as the worker would record it.

    - ``status``: the job's status after this attempt: ``"completed"``, ``"retrying"`` (a
      failed attempt with retries left; ``retry_in_seconds`` is the wait), ``"failed"``
      (retries used up, :class:`~workqueue.PermanentError`, an invalid payload, or a timeout
      with no retry left) or ``"cancelled"`` (:meth:`CancelSwitch.cancel`).
    - ``result``: the return value as stored (encoded to JSON and read back; ``None`` with
      ``result_warning`` set when it is not JSON-able or over the size limit, as the worker
      does).
    - ``error``: the one-line error the job record would hold; ``exception`` the exception
      itself (``None`` on success).
    - ``logs``: the lines written through ``ctx.logger`` (not for ``isolation="process"``).
    - ``progress``: the values reported with ``ctx.set_progress``, in order (a worker keeps
      the last one in the job record).
    """

    status: Literal["completed", "retrying", "failed", "cancelled"]
    context: JobContext
    result: Any = None
    error: str | None = None
    exception: BaseException | None = None
    retry_in_seconds: float | None = None
    timed_out: bool = False
    result_warning: str | None = None
    duration_seconds: float = 0.0
    logs: list[LogLine] = field(default_factory=list)
    progress: list[Any] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        """True when the job completed."""
        return self.status == "completed"


def make_context(
    job_type: str,
    *,
    job_id: str | None = None,
    queue: str = "default",
    attempt: int = 1,
    retries: int = 3,
    timeout: float = 300.0,
    token: int | None = None,
    cancelled: CancelFlag | None = None,
    worker_id: str = TEST_WORKER_ID,
    enqueued_at: datetime | None = None,
    bound_logger: Logger | None = None,
) -> JobContext:
    """A :class:`JobContext` as a worker builds it, for calling a handler directly.

    The job id defaults to a fresh random one, the fencing token to the attempt number (tokens
    grow with every attempt), the logger to loguru's bound to the job's id, type, attempt and
    queue (as the worker's), ``cancelled`` to a new :class:`CancelSwitch`.
    """
    job_id = job_id if job_id is not None else f"test-{uuid.uuid4().hex}"
    return JobContext(
        job_id=job_id,
        type=job_type,
        queue=queue,
        attempt=attempt,
        retries=retries,
        enqueued_at=enqueued_at or datetime.now(UTC),
        worker_id=worker_id,
        timeout=timeout,
        logger=bound_logger
        or logger.bind(job_id=job_id, type=job_type, attempt=attempt, queue=queue),
        token=attempt if token is None else token,
        cancelled=cancelled if cancelled is not None else CancelSwitch(),
    )


async def run_job(
    job_type: JobType | str,
    payload: Any = None,
    *,
    registry: Registry | None = None,
    job_id: str | None = None,
    queue: str = "default",
    attempt: int = 1,
    retries: int | None = None,
    failures_before: int | None = None,
    timeout: float | None = None,
    token: int | None = None,
    cancelled: CancelSwitch | None = None,
    worker_id: str = TEST_WORKER_ID,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    max_result_bytes: int = MAX_RESULT_BYTES,
) -> AttemptResult:
    """Run one attempt of ``job_type``'s handler with ``payload`` as a worker would.

    ``job_type`` is a :class:`JobType` or the name of one in ``registry`` (default: the
    installed plugins, as the worker loads them). ``payload`` (default ``{}``) is anything
    JSON-able, or the schema's typed object: it is encoded and validated like a payload read
    from Redis. ``retries`` and ``timeout`` default to the job type's; ``failures_before`` (the
    failed attempts before this one, default ``attempt - 1``) decides with ``retries`` whether
    a failure is retried. Never raises for what the handler does: the outcome is returned.
    """
    if isinstance(job_type, JobType):
        registry = registry or Registry.from_job_types([job_type], plugin="test")
        kind = job_type
    else:
        registry = registry or build_registry()
        kind = registry.require(job_type)
    retries = kind.retries if retries is None else retries
    timeout = kind.timeout if timeout is None else timeout
    switch = cancelled if cancelled is not None else CancelSwitch()
    marker = uuid.uuid4().hex
    job_id = job_id if job_id is not None else f"test-{uuid.uuid4().hex}"
    bound = logger.bind(
        job_id=job_id, type=kind.name, attempt=attempt, queue=queue, wq_testing=marker
    )
    ctx = make_context(
        kind.name,
        job_id=job_id,
        queue=queue,
        attempt=attempt,
        retries=retries,
        timeout=timeout,
        token=token,
        cancelled=switch,
        worker_id=worker_id,
        bound_logger=bound,
    )
    lines: list[LogLine] = []
    sink = logger.add(_collector(lines), filter=lambda r: r["extra"].get("wq_testing") == marker)
    started = time.perf_counter()
    failures = attempt - 1 if failures_before is None else failures_before
    try:
        raw = msgspec.json.encode({} if payload is None else payload)
        try:
            typed = decode_payload(registry, kind, raw, max_payload_bytes)
        except InvalidJobError as exc:
            error = f"invalid job: {sanitize(str(exc), 2000)}"  # as the worker words it
            return AttemptResult(
                "failed", ctx, error=error, exception=exc, logs=lines, progress=_progress(ctx)
            )
        if switch.cancel_requested:  # asked before it started: a cancelled job never runs
            return AttemptResult("cancelled", ctx, logs=lines, progress=_progress(ctx))
        try:
            value, ended = await _call(kind, typed, ctx, switch, timeout)
        except Exception as exc:
            outcome = failure_outcome(exc, kind, failures)
            return _failed(ctx, exc, outcome.data, outcome.delay_ms, failures, retries, lines)
        if ended == "cancel":
            return AttemptResult(
                "cancelled",
                ctx,
                duration_seconds=time.perf_counter() - started,
                logs=lines,
                progress=_progress(ctx),
            )
        if ended == "timeout":
            late = TimeoutError(f"timed out after {timeout:g}s")
            delay = failure_outcome(late, kind, failures).delay_ms
            return _failed(ctx, late, str(late), delay, failures, retries, lines, timed_out=True)
        encoded, warning = encode_result(value, max_result_bytes)
        return AttemptResult(
            "completed",
            ctx,
            result=msgspec.json.decode(encoded),
            result_warning=warning,
            duration_seconds=time.perf_counter() - started,
            logs=lines,
            progress=_progress(ctx),
        )
    finally:
        logger.remove(sink)


def run_job_sync(job_type: JobType | str, payload: Any = None, **options: Any) -> AttemptResult:
    """:func:`run_job` for a test that is not ``async`` (runs its own event loop)."""
    return asyncio.run(run_job(job_type, payload, **options))


def _failed(
    ctx: JobContext,
    exc: BaseException,
    text: bytes | str,
    delay_ms: int,
    failures_before: int,
    retries: int,
    lines: list[LogLine],
    *,
    timed_out: bool = False,
) -> AttemptResult:
    """finish.lua's rule: retried when the delay allows it and failures stay within retries."""
    error = text.decode() if isinstance(text, bytes) else text
    if delay_ms >= 0 and failures_before + 1 <= retries:
        return AttemptResult(
            "retrying",
            ctx,
            error=error,
            exception=exc,
            retry_in_seconds=delay_ms / 1000,
            timed_out=timed_out,
            logs=lines,
            progress=_progress(ctx),
        )
    return AttemptResult(
        "failed",
        ctx,
        error=error,
        exception=exc,
        timed_out=timed_out,
        logs=lines,
        progress=_progress(ctx),
    )


async def _call(
    kind: JobType, payload: Any, ctx: JobContext, switch: CancelSwitch, timeout: float
) -> tuple[Any, Literal["returned", "timeout", "cancel"]]:
    """The handler's return value, and how the attempt ended. At the timeout or a cancel
    request the flag is set and the task cancelled; a plain ``def``'s thread (which cannot be
    interrupted) gets :data:`THREAD_GRACE_SECONDS` to notice the flag and return, then is left
    to finish alone (a daemon thread: it never holds up the test run's exit)."""
    loop = asyncio.get_running_loop()
    asked = asyncio.Event()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: the run is over
            loop.call_soon_threadsafe(asked.set)

    switch._wake = wake
    waiter = asyncio.ensure_future(asked.wait())
    try:
        return await _call_until(kind, payload, ctx, switch, timeout, waiter)
    finally:
        switch._wake = None
        waiter.cancel()


async def _call_until(
    kind: JobType,
    payload: Any,
    ctx: JobContext,
    switch: CancelSwitch,
    timeout: float,
    waiter: asyncio.Future[Any],
) -> tuple[Any, Literal["returned", "timeout", "cancel"]]:
    handler: Callable[..., Any] = kind.handler
    if kind.isolation == "process":
        work: asyncio.Future[Any] = asyncio.ensure_future(run_isolated(handler, payload, ctx))
    elif inspect.iscoroutinefunction(handler):
        work = asyncio.ensure_future(handler(payload, ctx))
    else:
        work = _in_thread(handler, payload, ctx)
    done, _ = await asyncio.wait(
        {work, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
    )
    if work not in done:
        switch.set()
        if isinstance(work, asyncio.Task):
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
        else:
            await asyncio.wait({work}, timeout=THREAD_GRACE_SECONDS)
            if work.done():
                work.exception()  # retrieved: an error after the timeout is not reported
        return None, "cancel" if waiter in done else "timeout"
    result = work.result()
    if inspect.isawaitable(result):  # a plain def that returned a coroutine, as the worker allows
        result = await result
    return result, "returned"


def _in_thread(handler: Callable[..., Any], payload: Any, ctx: JobContext) -> asyncio.Future[Any]:
    """Run a plain ``def`` handler in a daemon thread of its own; its outcome as a future."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def target() -> None:
        try:
            value = handler(payload, ctx)
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(settle, None, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, value, None)

    threading.Thread(target=target, name="wq-testing-handler", daemon=True).start()
    return future


def _progress(ctx: JobContext) -> list[Any]:
    flag = ctx.cancelled
    return list(flag.progress) if isinstance(flag, CancelSwitch) else []


def _collector(lines: list[LogLine]) -> Callable[[Message], None]:
    def sink(message: Message) -> None:
        record = message.record
        extra = {k: v for k, v in record["extra"].items() if k != "wq_testing"}
        lines.append(LogLine(record["level"].name, record["message"], extra))

    return cast("Callable[[Message], None]", sink)
