"""The worker process: fetch loop, bounded concurrency, lease renewal, batched outcomes.

One event loop runs:
- the fetch loop: reserve up to the free slots in one round trip; when nothing is there, block
  on the queues' wake-up lists (BLPOP) until work arrives or the next due time, capped at
  ``idle_wait_seconds``, so an idle worker sends well under one command per second;
- one task per job (plain ``def`` handlers go to a thread pool);
- the finisher: outcomes of finished jobs are settled in one script call per queue, so under
  load many acks share one round trip;
- the lease renewer and the heartbeat that advertises this worker's job types.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import os
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import msgspec
from loguru import logger
from redis.asyncio import Redis
from redis.exceptions import RedisError

from workqueue import clock
from workqueue.broker.broker import Broker, FinishOp
from workqueue.broker.connection import create_redis, setup_problem
from workqueue.errors import ConfigurationError, InvalidJobError, PluginError
from workqueue.hookspecs import JobEvent, WorkerInfo
from workqueue.job import ReservedJob, ms_to_datetime
from workqueue.jobtypes import NAME_PATTERN, JobContext
from workqueue.log import EventBatch, sanitize
from workqueue.plugins import WorkQueuePluginManager, plugin_label
from workqueue.registry import Registry
from workqueue.settings import WorkerSettings
from workqueue.worker.execution import (
    Outcome,
    decode_payload,
    encode_result,
    failure_outcome,
    run_handler,
)
from workqueue.worker.metrics import RunTimeHistogram, collect, render_prometheus, wants_prometheus

if TYPE_CHECKING:
    from loguru import Logger

__all__ = ["Worker", "WorkerStats"]

RECONNECT_MAX_SECONDS = 5.0
#: job event lines wait at most this long to be handed to the log sinks, in one call...
EVENT_WRITE_SECONDS = 0.05
#: ...or until this many are waiting
EVENT_WRITE_LINES = 2000
#: the outcome of a job cancelled by a graceful stop: handed back, not counted as failed
RELEASE = Outcome("release")


def _log_redis_error(doing: str, exc: BaseException, retry_in: float) -> None:
    """An outage is a warning; a set-up error (login, TLS, ACL) is an error that says what
    to fix. Either way the caller retries after ``retry_in`` seconds (bounded backoff)."""
    problem = setup_problem(exc)
    if problem is None:
        logger.warning(
            "redis unavailable while {} ({}); retrying in {:.1f}s",
            doing,
            sanitize(exc, 200),
            retry_in,
        )
    else:
        logger.error("{} ({}); retrying in {:.1f}s", problem, sanitize(exc, 200), retry_in)


class _AttemptTimedOut(Exception):
    """The attempt ran past its timeout and was cancelled."""


@dataclass(slots=True)
class WorkerStats:
    """This process's own figures."""

    started_at: float = field(default_factory=clock.now)
    #: monotonic start, for the uptime (immune to wall-clock steps)
    started_monotonic: float = field(default_factory=time.monotonic)
    reserved: int = 0
    succeeded: int = 0
    failed_attempts: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    stale: int = 0
    recovered: int = 0
    last_fetch_at: float = 0.0


class _Pending(msgspec.Struct):
    job: ReservedJob
    op: FinishOp
    duration_s: float
    error: str | None = None


def _applied_outcome(item: _Pending) -> str:
    """What an outcome reported as "duplicate" was: the same call had already applied it (its
    reply was lost and the call was retried), with the same effect finish.lua gives it."""
    op = item.op
    if op.op == "ack":
        return "completed"
    if op.op == "release":
        return "released"
    retry = op.delay_ms >= 0 and item.job.failures + 1 <= item.job.retries
    return "retrying" if retry else "failed"


class _JobLogger:
    """``ctx.logger``: bound to the job on first use, as most handlers never log."""

    __slots__ = ("_before_first_use", "_bound", "_job")

    def __init__(self, job: ReservedJob, before_first_use: Callable[[], None]) -> None:
        self._job = job
        self._bound: Logger | None = None
        self._before_first_use = before_first_use

    def __getattr__(self, name: str) -> Any:
        bound = self._bound
        if bound is None:
            self._before_first_use()  # the job's "started" line comes before its own lines
            job = self._job
            bound = self._bound = logger.bind(
                job_id=job.id, type=job.type, attempt=job.attempt, queue=job.queue
            )
        return getattr(bound, name)


class Worker:
    """Runs jobs from the given queues until :meth:`request_stop`."""

    def __init__(
        self,
        settings: WorkerSettings,
        registry: Registry,
        plugin_manager: WorkQueuePluginManager | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.pm = plugin_manager
        self.stats = WorkerStats()
        self.redis: Redis = create_redis(settings.redis_url)
        # BLPOP holds its connection; a socket timeout above the longest wait detects a dead link.
        self._blocking: Redis = create_redis(
            settings.redis_url, socket_timeout=settings.idle_wait_seconds + 5.0, retries=0
        )
        self.broker = Broker(self.redis, settings.broker)
        self.info = WorkerInfo(settings.worker_id, settings.queues, settings.concurrency)
        self._executor = ThreadPoolExecutor(
            max_workers=settings.concurrency, thread_name_prefix="wq-handler"
        )
        self._running: dict[str, tuple[ReservedJob, asyncio.Task[None]]] = {}
        self._lost: set[str] = set()
        # Attempt timeouts: one timer for the earliest deadline instead of one per job.
        self._deadlines: list[tuple[float, int, asyncio.Task[None]]] = []
        self._deadline_seq = itertools.count()
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_at = 0.0
        self._timed_out: set[asyncio.Task[None]] = set()
        self._pending: list[_Pending] = []
        self._reserve_id = uuid.uuid4().hex
        #: outcomes of the finish call in flight (their leases are still renewed)
        self._settling: list[_Pending] = []
        self._events = EventBatch()
        self._events_timer: asyncio.TimerHandle | None = None
        self._extras: dict[str, tuple[tuple[str, object], ...]] = {}
        self._finish_wake = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._stop = asyncio.Event()
        self._releasing = False
        self._closing = False
        self.histogram = RunTimeHistogram()
        self._metrics_server: asyncio.Server | None = None
        self._observed = bool(
            plugin_manager and plugin_manager.hook.workqueue_job_event.get_hookimpls()
        )

    # -- lifecycle -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop taking jobs; running ones get the grace period (thread-safe via the loop)."""
        self._stop.set()

    async def run(self) -> None:
        """Run until stopped, then drain, release and close."""
        await self._call_lifecycle("workqueue_worker_startup", strict=True)
        logger.info(
            "worker started: queues={} concurrency={} lease={}s types={}",
            ",".join(self.settings.queues),
            self.settings.concurrency,
            self.settings.lease_seconds,
            ",".join(self.registry.names()) or "-",
        )
        if self.settings.metrics_port is not None:
            from workqueue.worker.http import serve

            try:
                self._metrics_server = await serve(
                    self.settings.metrics_host, self.settings.metrics_port, self._metrics_route
                )
            except OSError as exc:
                raise ConfigurationError(
                    f"metrics server cannot listen on {self.settings.metrics_host}:"
                    f"{self.settings.metrics_port}: {exc.strerror or exc}"
                ) from None
            logger.info(
                "metrics on http://{}:{}/metrics",
                self.settings.metrics_host,
                self.settings.metrics_port,
            )
        finisher = asyncio.create_task(self._finisher(), name="wq-finisher")
        helpers = [
            finisher,
            asyncio.create_task(self._renewer(), name="wq-renewer"),
            asyncio.create_task(self._heartbeat(), name="wq-heartbeat"),
        ]
        if self.settings.audit_seconds > 0:
            helpers.append(asyncio.create_task(self._auditor(), name="wq-auditor"))
        try:
            await self._fetch_loop()
            await self._drain()
        finally:
            # Outcomes first: the finisher drains what is pending, then returns by itself.
            self._closing = True
            self._finish_wake.set()
            await asyncio.wait([finisher], timeout=self.settings.lease_seconds + 5)
            for task in helpers:
                task.cancel()
            # redis-py may swallow a cancellation mid-command; never wait on it forever.
            await asyncio.wait(helpers, timeout=2)
            if self._watchdog is not None:
                self._watchdog.cancel()
            self._write_events()
            if self._metrics_server is not None:
                self._metrics_server.close()
            await self._unregister()
            await self._call_lifecycle("workqueue_worker_shutdown", strict=False)
            self._executor.shutdown(wait=False, cancel_futures=True)
            await self.redis.aclose()
            await self._blocking.aclose()
            logger.info(
                "worker stopped: succeeded={} failed={} retried={} released={}",
                self.stats.succeeded,
                self.stats.failed,
                self.stats.retried,
                self.stats.released,
            )

    async def _call_lifecycle(self, hook_name: str, *, strict: bool) -> None:
        if self.pm is None:
            return
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            label = plugin_label(self.pm, impl.plugin)
            try:
                result = impl.function(worker=self.info)
                if result is not None:
                    await result
            except Exception as exc:
                if strict:
                    raise PluginError(f"plugin {label!r} failed in {hook_name}: {exc}") from exc
                logger.error("plugin {} failed in {}: {}", label, hook_name, sanitize(exc))

    def running_jobs(self) -> list[ReservedJob]:
        """The jobs this process is running now."""
        return [job for job, _task in self._running.values()]

    async def _metrics_route(self, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
        from workqueue.worker.http import json_response

        if path not in ("/metrics", "/api/metrics"):
            return json_response(404, {"error": "not found", "routes": ["/metrics"]})
        figures = await collect(self)
        if wants_prometheus(headers.get("accept", "")):
            body = render_prometheus(figures, self.histogram).encode()
            return 200, "text/plain; version=0.0.4; charset=utf-8", body
        return json_response(200, figures)

    # -- fetching --------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            free = self.settings.concurrency - len(self._running)
            if free <= 0:
                self._slot_free.clear()
                await self._wait_any(self._slot_free.wait())
                continue
            try:
                got, wait_s = await self._reserve(free)
                backoff = 0.1
            except (RedisError, OSError) as exc:
                _log_redis_error("fetching", exc, backoff)
                await self._wait_any(asyncio.sleep(backoff))
                backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)
                continue
            if got:
                continue
            try:
                await self._wait_any(
                    self.broker.wait_for_work(self._blocking, self.settings.queues, wait_s)
                )
            except (RedisError, OSError) as exc:
                _log_redis_error("waiting", exc, backoff)
                await self._wait_any(asyncio.sleep(backoff))
                backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)

    async def _wait_any(self, awaitable: Any) -> None:
        """Await ``awaitable`` unless a stop request comes first (then it is cancelled)."""
        task = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when="FIRST_COMPLETED")
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                    await task
        if task.done() and not task.cancelled():
            task.result()

    async def _reserve(self, free: int) -> tuple[int, float]:
        """Reserve from the queues in priority order; returns (jobs got, idle wait seconds)."""
        got = 0
        wait_s = self.settings.idle_wait_seconds
        for queue in self.settings.queues:
            if free - got <= 0:
                break
            (result,) = await self.broker.reserve(
                [(queue, free - got)],
                lease_ms=self.settings.lease_ms,
                worker_id=self.settings.worker_id,
                request_id=self._reserve_id,
            )
            # Kept after a failed call: its retry then gets the jobs a lost reply carried.
            self._reserve_id = uuid.uuid4().hex
            self.stats.last_fetch_at = clock.now()
            for rec in result.recovered:
                log = logger.bind(job_id=rec.job_id, type=rec.type, queue=rec.queue)
                if rec.outcome == "invalid":
                    self.stats.failed += 1
                    log.error("failed for good: invalid job: malformed record (not run)")
                    continue
                self.stats.recovered += rec.outcome in ("requeued", "failed")
                if rec.outcome == "failed":
                    log.error("failed for good: lease lost too many times (worker died each time)")
                elif rec.outcome == "orphan":
                    log.warning("dropped an index entry whose job record is missing (orphan)")
                elif rec.outcome == "stray":
                    log.warning(
                        "dropped an index entry that disagrees with its job's state (stray)"
                    )
                else:
                    log.warning("recovered after a lost lease: requeued")
            events = self._events
            started = events.enabled("INFO")
            extra = self._queue_extra(queue)
            for job in result.jobs:
                if started:
                    events.add("INFO", job.id, job.type, job.attempt, "started", extra)
                self._start(job)
            self._events_added()
            got += len(result.jobs)
            if result.next_wake_ms is not None:
                wait_s = min(wait_s, max(0.0, (result.next_wake_ms - result.now_ms) / 1000))
        return got, wait_s

    def _events_added(self) -> None:
        """Job event lines were added: write them soon, many reserve and finish batches in one
        loguru call (each call is a record pickled through a pipe to the writer thread, and
        that thread gets the GIL only between the loop's time slices)."""
        if len(self._events) >= EVENT_WRITE_LINES:
            self._write_events()
        elif self._events_timer is None and len(self._events):
            loop = asyncio.get_running_loop()
            self._events_timer = loop.call_later(EVENT_WRITE_SECONDS, self._write_events)

    def _write_events(self) -> None:
        if self._events_timer is not None:
            self._events_timer.cancel()
            self._events_timer = None
        self._events.write()

    def _queue_extra(self, queue: str) -> tuple[tuple[str, object], ...]:
        """The ``queue=`` pair of a job's event lines (one tuple per queue, reused)."""
        extra = self._extras.get(queue)
        if extra is None:
            extra = self._extras[queue] = (("queue", queue),)
        return extra

    def _start(self, job: ReservedJob) -> None:
        self.stats.reserved += 1
        task = asyncio.create_task(self._run_job(job))
        self._running[job.id] = (job, task)

    def _arm_deadline(self, task: asyncio.Task[None], timeout: float) -> None:
        """Cancel ``task`` (as timed out) ``timeout`` seconds from now unless it is done."""
        loop = asyncio.get_running_loop()
        when = loop.time() + timeout
        heap = self._deadlines
        heapq.heappush(heap, (when, next(self._deadline_seq), task))
        if self._watchdog is None or when < self._watchdog_at:
            if self._watchdog is not None:
                self._watchdog.cancel()
            self._watchdog = loop.call_at(when, self._on_deadline)
            self._watchdog_at = when
        if len(heap) > 2 * len(self._running) + 1024:
            # Entries of finished jobs are dropped lazily; keep the heap near the running set.
            self._deadlines = [entry for entry in heap if not entry[2].done()]
            heapq.heapify(self._deadlines)

    def _on_deadline(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        heap = self._deadlines
        while heap and (heap[0][0] <= now or heap[0][2].done()):
            _when, _seq, task = heapq.heappop(heap)
            if not task.done():
                self._timed_out.add(task)
                task.cancel()
        if heap:
            self._watchdog_at = heap[0][0]
            self._watchdog = loop.call_at(self._watchdog_at, self._on_deadline)
        else:
            self._watchdog = None

    # -- running a job ---------------------------------------------------------------------

    async def _run_job(self, job: ReservedJob) -> None:
        log = _JobLogger(job, self._write_events)
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
                job.queue,
                job.attempt,
                job.retries,
                ms_to_datetime(job.enqueued_at_ms),  # type: ignore[arg-type]
                self.settings.worker_id,
                job.timeout,
                cast("Logger", log),
            )
            if self._observed:
                self._emit("started", job)
            timeout = job.timeout if job.timeout > 0 else job_type.timeout
            self._arm_deadline(asyncio.current_task(), timeout)  # type: ignore[arg-type]
            result = await run_handler(job_type, payload, ctx, self._executor)
            encoded, warning = encode_result(result, self.settings.max_result_bytes)
            if warning:
                log.warning("{}; stored as null", warning)
            outcome = Outcome("ack", encoded)
        except asyncio.CancelledError:
            if job.id in self._lost:
                log.warning("lease lost while running: outcome dropped (job runs elsewhere)")
                return
            if asyncio.current_task() in self._timed_out:
                exc = _AttemptTimedOut(f"timed out after {timeout:g}s")
                delay = failure_outcome(exc, job_type, job.failures).delay_ms
                outcome = Outcome("fail", str(exc), delay)
            elif self._releasing:
                outcome = RELEASE
            else:
                raise
        except InvalidJobError as exc:
            outcome = Outcome("fail", f"invalid job: {sanitize(str(exc), 2000)}", -1)
        except Exception as exc:
            outcome = failure_outcome(exc, job_type, job.failures)
        finally:
            if outcome is not None:
                self._settle(job, outcome, time.perf_counter() - started)
            self._running.pop(job.id, None)
            self._lost.discard(job.id)
            if self._timed_out:
                self._timed_out.discard(asyncio.current_task())
            self._slot_free.set()

    def _settle(self, job: ReservedJob, outcome: Outcome, duration_s: float) -> None:
        if outcome.kind == "ack":
            op = FinishOp("ack", job.id, job.token, outcome.data)
            error = None
        elif outcome.kind == "release":
            op = FinishOp("release", job.id, job.token)
            error = None
        else:
            op = FinishOp("fail", job.id, job.token, outcome.data, outcome.delay_ms)
            error = outcome.data if isinstance(outcome.data, str) else outcome.data.decode()
        self._pending.append(_Pending(job, op, duration_s, error))
        self._finish_wake.set()

    def _emit(
        self, kind: Any, job: ReservedJob, duration: float | None = None, error: str | None = None
    ) -> None:
        if not self._observed or self.pm is None:
            return
        self._write_events()  # an observer's own log lines come after this event's line
        event = JobEvent(
            kind, job.id, job.type, job.queue, job.attempt, self.settings.worker_id, duration, error
        )
        for impl in self.pm.hook.workqueue_job_event.get_hookimpls():
            try:
                impl.function(event=event)
            except Exception as exc:
                logger.error(
                    "plugin {} failed in workqueue_job_event: {}",
                    plugin_label(self.pm, impl.plugin),
                    sanitize(exc),
                )

    # -- settling outcomes -----------------------------------------------------------------

    async def _finisher(self) -> None:
        while True:
            await self._finish_wake.wait()
            self._finish_wake.clear()
            await self._flush()
            if self._closing and not self._pending:
                return

    async def _flush(self) -> None:
        """Send every pending outcome; on a Redis error keep them and retry with backoff.

        Once the worker is closing, it gives up after ``lease_seconds``: the leases of the
        unreported jobs then expire and the jobs run again elsewhere (at least once).
        """
        backoff = 0.05
        deadline: float | None = None
        while self._pending:
            if self._closing and deadline is None:
                deadline = time.monotonic() + max(2.0, self.settings.lease_seconds)
            batch, self._pending = self._pending, []
            self._settling = batch
            ops: dict[str, list[FinishOp]] = {}
            for item in batch:
                ops.setdefault(item.job.queue, []).append(item.op)
            try:
                outcomes = await self.broker.finish(ops)
            except (RedisError, OSError) as exc:
                self._settling = []
                self._pending = batch + self._pending
                if deadline is not None and time.monotonic() > deadline:
                    logger.error(
                        "could not report {} outcomes ({}); their leases will expire and "
                        "the jobs run again",
                        len(self._pending),
                        sanitize(exc, 200),
                    )
                    self._pending = []
                    return
                logger.warning(
                    "redis unavailable while reporting outcomes ({})", sanitize(exc, 200)
                )
                await asyncio.sleep(backoff)
                # never wait longer than a renewal interval once Redis is back
                backoff = min(backoff * 2, RECONNECT_MAX_SECONDS, self.settings.lease_seconds / 3)
                continue
            self._settling = []
            iters = {q: iter(v) for q, v in outcomes.items()}
            try:
                for item in batch:
                    outcome = next(iters[item.job.queue])
                    if outcome == "duplicate":
                        outcome = _applied_outcome(item)
                    self._log_outcome(item, outcome)
            finally:
                self._events_added()

    def _log_outcome(self, item: _Pending, outcome: str) -> None:
        job = item.job
        events = self._events
        ms = item.duration_s * 1000
        extra = self._queue_extra(job.queue)
        if outcome in ("completed", "retrying", "failed"):
            self.histogram.observe(
                job.type, "succeeded" if outcome == "completed" else "failed", item.duration_s
            )
        if outcome == "completed":
            self.stats.succeeded += 1
            events.add("INFO", job.id, job.type, job.attempt, f"succeeded in {ms:.1f} ms", extra)
            self._emit("succeeded", job, item.duration_s)
        elif outcome == "retrying":
            self.stats.failed_attempts += 1
            self.stats.retried += 1
            events.add(
                "WARNING",
                job.id,
                job.type,
                job.attempt,
                f"attempt failed after {ms:.1f} ms: {item.error}",
                extra,
            )
            events.add(
                "WARNING",
                job.id,
                job.type,
                job.attempt,
                f"retry scheduled in {item.op.delay_ms / 1000:.2f}s",
                extra,
            )
            self._emit("attempt_failed", job, item.duration_s, item.error)
            self._emit("retry_scheduled", job, item.duration_s, item.error)
        elif outcome == "failed":
            self.stats.failed_attempts += 1
            self.stats.failed += 1
            events.add(
                "ERROR",
                job.id,
                job.type,
                job.attempt,
                f"failed for good after {job.attempt} attempt(s): {item.error}",
                extra,
            )
            self._emit("attempt_failed", job, item.duration_s, item.error)
            self._emit("failed", job, item.duration_s, item.error)
        elif outcome == "released":
            self.stats.released += 1
            events.add(
                "INFO",
                job.id,
                job.type,
                job.attempt,
                "released back to the queue (worker stopping)",
                extra,
            )
        elif outcome == "stale":
            self.stats.stale += 1
            events.add(
                "WARNING",
                job.id,
                job.type,
                job.attempt,
                f"stale lease: {item.op.op} refused (the lease expired and the job was handed on)",
                extra,
            )
        elif outcome == "missing":
            events.add(
                "WARNING",
                job.id,
                job.type,
                job.attempt,
                "job record vanished before its outcome was reported",
                extra,
            )

    # -- leases and heartbeat --------------------------------------------------------------

    async def _renewer(self) -> None:
        interval = max(0.2, self.settings.lease_seconds / 3)
        next_at = time.monotonic() + interval
        while True:
            # A fixed rate: a slow renew round trip does not stretch the period past lease/3.
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at + interval, time.monotonic())
            # A finished job keeps its lease until its outcome is applied: under a slow or
            # broken link the outcome may wait longer than the lease has left.
            held = [job for job, _task in self._running.values()]
            held += [item.job for item in (*self._settling, *self._pending)]
            if not held:
                continue
            leases: dict[str, list[tuple[str, str]]] = {}
            for job in held:
                leases.setdefault(job.queue, []).append((job.id, job.token))
            try:
                lost = await self.broker.renew(leases, lease_ms=self.settings.lease_ms)
            except (RedisError, OSError) as exc:
                logger.warning("could not renew leases ({})", sanitize(exc, 200))
                continue
            for ids in lost.values():
                for job_id in ids:
                    entry = self._running.get(job_id)
                    if entry is not None:
                        self._lost.add(job_id)
                        entry[1].cancel()

    def _advert(self) -> bytes:
        return msgspec.json.encode(
            {
                "id": self.settings.worker_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "queues": list(self.settings.queues),
                "types": self.registry.names(),
                "concurrency": self.settings.concurrency,
                "started_at": self.stats.started_at,
            }
        )

    async def _heartbeat(self) -> None:
        ttl = max(2, int(self.settings.heartbeat_seconds * 3))
        while True:
            try:
                await self.broker.heartbeat(self.settings.worker_id, self._advert(), ttl)
            except (RedisError, OSError) as exc:
                logger.debug("heartbeat failed ({})", sanitize(exc, 200))
            await asyncio.sleep(self.settings.heartbeat_seconds)

    async def _auditor(self) -> None:
        """The consistency sweep: one SCAN step per queue every ``audit_seconds``; a record
        outside the index of its status is put back (see audit.lua) with a warning."""
        cursors = dict.fromkeys(self.settings.queues, 0)
        while True:
            await asyncio.sleep(self.settings.audit_seconds)
            for queue, cursor in cursors.items():
                try:
                    cursors[queue], repaired = await self.broker.audit(queue, cursor)
                except (RedisError, OSError) as exc:
                    logger.debug("consistency sweep failed ({})", sanitize(exc, 200))
                    continue
                for job_id, status in repaired:
                    logger.bind(job_id=job_id, queue=queue).warning(
                        "repaired: a {} job was in no index; put back (consistency sweep)",
                        status,
                    )

    async def _unregister(self) -> None:
        keys = self.broker.globals
        with contextlib.suppress(RedisError, OSError):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.delete(keys.worker(self.settings.worker_id))
                pipe.zrem(keys.workers, self.settings.worker_id)
                await pipe.execute()

    # -- graceful stop ---------------------------------------------------------------------

    async def _drain(self) -> None:
        """Let running jobs finish within the grace period, then release the rest at once."""
        tasks = [task for _job, task in self._running.values()]
        if tasks:
            logger.info(
                "stopping: waiting up to {:g}s for {} running job(s)",
                self.settings.grace_seconds,
                len(tasks),
            )
            _done, pending = await asyncio.wait(tasks, timeout=self.settings.grace_seconds)
            if pending:
                self._releasing = True
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
