"""Executing: runs of reserved jobs, keyed by ``(job id, token)``, each holding one slot.

- ``async def`` handlers run as tasks in the event loop; plain ``def`` handlers in a pool of
  exactly ``concurrency`` threads; ``isolation="process"`` handlers in a child process each.
- Attempt timeouts share one loop timer (:class:`Deadlines`).
- :meth:`Executor.stop_run` ends exactly one run: its task is cancelled and its
  ``ctx.cancelled`` set. A timed-out attempt is reported failed; a run whose lease was lost
  reports nothing (the job runs elsewhere, or again here under a newer token); a run handed
  back by a graceful stop is released; a run of a job asked to cancel is reported
  ``cancel`` at once (a plain ``def`` handler's thread runs on as a hung thread, seeing
  ``ctx.cancelled``, until it returns).
- A slot is free only when its handler has really returned. A plain ``def`` whose attempt
  ended while its thread runs on is *hung*: its outcome is reported at once, but it keeps its
  slot (and its pool thread) until the thread returns, so a new job never waits in the pool
  behind it with its timeout counting. ``on_hung`` is told the count, so the worker can stop
  fetching and recycle the process when too many threads hang.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast

from loguru import logger

from workqueue.broker.partitions import logical_name
from workqueue.errors import InvalidJobError
from workqueue.job import ReservedJob, ms_to_datetime
from workqueue.jobtypes import NAME_PATTERN, JobContext, JobType
from workqueue.log import sanitize
from workqueue.registry import Registry
from workqueue.settings import WorkerSettings
from workqueue.tracing import ENABLED as TRACING
from workqueue.tracing import attempt_span, no_span
from workqueue.worker.events import JobLog, JobLogger, Observers
from workqueue.worker.execution import Outcome, decode_payload, encode_result, failure_outcome
from workqueue.worker.isolation import run_isolated
from workqueue.worker.runs import Deadlines, Run, RunKey, StopReason

if TYPE_CHECKING:
    from loguru import Logger

__all__ = ["CANCEL", "RELEASE", "Executor"]

#: the outcome of a job handed back by a graceful stop: not counted as failed
RELEASE = Outcome("release")
#: the outcome of a run stopped because its job was asked to cancel: the job ends cancelled
CANCEL = Outcome("cancel")

# Whether a handler is ``async def``, asked once per handler rather than once per job.
_IS_ASYNC: dict[Callable[..., Any], bool] = {}


class Executor:
    """Starts runs, times them out, stops them, and hands their outcomes to ``settle``."""

    def __init__(
        self,
        settings: WorkerSettings,
        registry: Registry,
        log: JobLog,
        observers: Observers,
        settle: Callable[[Run], None],
        on_hung: Callable[[int], None] = lambda hung: None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self._log = log
        self._observers = observers
        self._settle = settle
        self._on_hung = on_hung
        self._pool = ThreadPoolExecutor(
            max_workers=settings.concurrency, thread_name_prefix="wq-handler"
        )
        #: every run holding a slot: running, or a hung thread
        self.runs: dict[RunKey, Run] = {}
        #: runs whose attempt ended while their thread runs on
        self.hung = 0
        self.deadlines = Deadlines(self._timed_out)
        #: set whenever a slot frees
        self.slot_free = asyncio.Event()

    @property
    def free(self) -> int:
        """Slots free now."""
        return self.settings.concurrency - len(self.runs)

    def running(self) -> list[Run]:
        """The runs whose attempt goes on (not hung threads)."""
        return [run for run in self.runs.values() if run.running]

    def start(self, job: ReservedJob) -> Run:
        """Start a run of a reserved job (the caller checked there is a free slot)."""
        run = Run(job)
        existing = self.runs.get(run.key)
        if existing is not None:  # the same lease handed out twice: one run is enough
            return existing
        self.runs[run.key] = run
        run.task = asyncio.create_task(self._run(run))
        return run

    def stop_run(self, key: RunKey, reason: StopReason) -> Run | None:
        """Stop exactly the run ``key`` (never another run of the same job)."""
        run = self.runs.get(key)
        if run is not None and run.stop(reason):
            return run
        return None

    def _timed_out(self, run: Run) -> None:
        run.stop("timeout")

    async def _run(self, run: Run) -> None:
        job = run.job
        log = JobLogger(job, self._log.write)
        job_type = self.registry.get(job.type)
        started = time.perf_counter()
        outcome: Outcome | None = None
        timeout = 0.0
        try:
            if job_type is None and not NAME_PATTERN.match(job.type):
                raise InvalidJobError(f"job type {job.type!r} is not a valid job type name")
            if job_type is None:
                raise LookupError(
                    f"job type {job.type!r} is not installed on worker {self.settings.worker_id}"
                )
            payload = decode_payload(
                self.registry, job_type, job.payload, self.settings.max_payload_bytes
            )
            ctx = JobContext(
                job.id,
                job.type,
                logical_name(job.queue),  # partitions (H3): handlers see the logical queue
                job.attempt,
                job.retries,
                ms_to_datetime(job.enqueued_at_ms),  # type: ignore[arg-type]
                self.settings.worker_id,
                job.timeout,
                cast("Logger", log),
                int(job.token) if job.token.isdigit() else 0,
                run,
            )
            if self._observers.active:
                self._observers.emit("started", job)
            timeout = job.timeout if job.timeout > 0 else job_type.timeout
            self.deadlines.arm(run, timeout, len(self.runs))
            # The handler is called here, not through a helper coroutine: one frame fewer
            # per job on the hot path (async def in the loop).
            handler: Callable[..., Any] = job_type.handler
            is_async = _IS_ASYNC.get(handler)
            if is_async is None:
                is_async = _IS_ASYNC[handler] = inspect.iscoroutinefunction(handler)
            # OpenTelemetry: the attempt's CONSUMER span (nothing without the extra)
            span = attempt_span(job, ctx.worker_id) if TRACING else no_span()
            with span:
                if job_type.isolation == "process":
                    result = await run_isolated(handler, payload, ctx)
                elif is_async:
                    result = await handler(payload, ctx)
                else:
                    result = await self._in_thread(run, handler, payload, ctx)
            encoded, warning = encode_result(result, self.settings.max_result_bytes)
            if warning:
                log.warning("{}; stored as null", warning)
            outcome = Outcome("ack", encoded)
        except asyncio.CancelledError:
            if run.stopped is None:
                raise  # not ours to stop (the worker is closing): let it through
            outcome = _stopped_outcome(run, log, job_type, timeout)
        except InvalidJobError as exc:
            outcome = Outcome("fail", f"invalid job: {sanitize(str(exc), 2000)}", -1)
        except Exception as exc:
            outcome = failure_outcome(exc, job_type, job.failures)
        finally:
            if outcome is not None and run.stopped != "lost":
                run.outcome = outcome
                run.duration_s = time.perf_counter() - started
                self._settle(run)
            if run.thread is None:
                if self.runs.get(run.key) is run:
                    del self.runs[run.key]
                self.slot_free.set()
            else:
                self.hung += 1
                self._on_hung(self.hung)

    async def _in_thread(
        self, run: Run, handler: Callable[..., Any], payload: Any, ctx: JobContext
    ) -> Any:
        """A plain ``def`` handler in the pool; a hung thread keeps the run's slot."""
        thread = self._pool.submit(handler, payload, ctx)
        try:
            result = await asyncio.wrap_future(thread)
        except asyncio.CancelledError:
            if not thread.done():
                # The attempt ended but its thread runs on: the slot stays taken until it
                # returns (see the module docstring).
                run.thread = thread
                loop = asyncio.get_running_loop()
                thread.add_done_callback(
                    lambda _f: loop.call_soon_threadsafe(self._thread_returned, run)
                )
            raise
        if inspect.isawaitable(result):
            result = await result
        return result

    def _thread_returned(self, run: Run) -> None:
        """A hung run's thread returned (its task ended before: see ``_run``'s finally)."""
        if run.thread is None or self.runs.get(run.key) is not run:
            return
        run.thread = None
        self.hung -= 1
        del self.runs[run.key]
        self.slot_free.set()
        logger.bind(job_id=run.job.id, type=run.job.type, queue=logical_name(run.job.queue)).info(
            "handler thread returned after its attempt ended ({}); slot freed", run.stopped
        )

    def close(self) -> None:
        """Stop the timer and the pool (hung threads are left to the process's exit)."""
        self.deadlines.close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _stopped_outcome(
    run: Run, log: JobLogger, job_type: JobType | None, timeout: float
) -> Outcome | None:
    """The outcome of a run told to stop: timed out (a failed attempt), released (handed
    back), cancelled, or none at all when its lease was lost (the job runs elsewhere)."""
    if run.stopped == "timeout":
        exc = TimeoutError(f"timed out after {timeout:g}s")
        delay = failure_outcome(exc, job_type, run.job.failures).delay_ms
        return Outcome("fail", str(exc), delay, timed_out=True)
    if run.stopped == "release":
        return RELEASE
    if run.stopped == "cancel":
        log.info("cancelled while running (the job was asked to cancel)")
        return CANCEL
    log.warning("lease lost while running: outcome dropped (job runs elsewhere)")
    return None
