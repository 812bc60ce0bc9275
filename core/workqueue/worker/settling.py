"""Settling outcomes: finished attempts reported to the broker in batches.

Every outcome waiting when the settler wakes goes out in one ``finish`` call (one script call
per queue), so under load many acks share a round trip. The broker answers what each op
*applied* (:class:`~workqueue.broker.contract.Applied`: completed, retrying, failed, released,
stale, missing, the same verdict again for a repeat of an op already applied), and the job's
event lines, counters, run-time histogram and plugin events follow that verdict alone.
Outcomes waiting or in flight keep their leases renewed (see ``leases.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

from loguru import logger
from redis.exceptions import RedisError

from workqueue.broker.contract import Applied, BrokerAPI, FinishOp, OpKind
from workqueue.log import sanitize
from workqueue.worker.events import JobLog, Observers
from workqueue.worker.metrics import RunTimeHistogram
from workqueue.worker.progress import ProgressSender
from workqueue.worker.runs import Run
from workqueue.worker.stats import WorkerStats

__all__ = ["RECONNECT_MAX_SECONDS", "Settler"]

#: the longest pause between retries after a Redis error (fetching and settling)
RECONNECT_MAX_SECONDS = 5.0

# Module constants: an enum member looked up on its class costs more, once per job.
_ACK, _FAIL, _RELEASE = OpKind.ACK, OpKind.FAIL, OpKind.RELEASE
_COMPLETED, _RETRYING, _FAILED = Applied.COMPLETED, Applied.RETRYING, Applied.FAILED
_RELEASED, _STALE, _CANCELLED = Applied.RELEASED, Applied.STALE, Applied.CANCELLED


def finish_op(run: Run) -> FinishOp:
    """The broker op for a run's outcome."""
    job = run.job
    outcome = run.outcome
    assert outcome is not None
    if outcome.kind == "ack":
        return FinishOp(_ACK, job.id, job.token, outcome.data)
    if outcome.kind == "release":
        return FinishOp(_RELEASE, job.id, job.token)
    if outcome.kind == "cancel":
        return FinishOp(OpKind.CANCEL, job.id, job.token)
    data = outcome.data
    run.error = data if isinstance(data, str) else data.decode()
    return FinishOp(_FAIL, job.id, job.token, data, outcome.delay_ms, outcome.timed_out)


class Settler:
    """Collects outcomes and applies them in batches (see the module docstring)."""

    def __init__(
        self,
        broker: BrokerAPI,
        stats: WorkerStats,
        histogram: RunTimeHistogram,
        log: JobLog,
        observers: Observers,
        *,
        lease_seconds: float,
        progress: ProgressSender | None = None,
    ) -> None:
        self.broker = broker
        self.stats = stats
        self.histogram = histogram
        self._log = log
        self._observers = observers
        self._lease_seconds = lease_seconds
        #: sends the runs' last progress values before their outcomes
        self._progress = progress
        self._pending: list[Run] = []
        #: the batch of the finish call in flight
        self._settling: list[Run] = []
        self._wake = asyncio.Event()
        self._closing = False

    def add(self, run: Run) -> None:
        """A run ended with an outcome: report it with the next batch."""
        self._pending.append(run)
        self._wake.set()

    def held(self) -> Iterator[Run]:
        """Runs whose outcome is not applied yet: their leases must still be renewed."""
        yield from self._settling
        yield from self._pending

    def close(self) -> None:
        """Apply what is waiting, then let :meth:`loop` return."""
        self._closing = True
        self._wake.set()

    async def loop(self) -> None:
        """Wake on new outcomes and apply them; returns after :meth:`close` once all went."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()
            if self._closing and not self._pending:
                return

    async def flush(self) -> None:
        """Send every pending outcome; on a Redis error keep them and retry with backoff.

        Once closing, give up after ``lease_seconds``: the unreported jobs' leases then expire
        and they run again elsewhere (at least once).
        """
        backoff = 0.05
        deadline: float | None = None
        while self._pending:
            if self._closing and deadline is None:
                deadline = time.monotonic() + max(2.0, self._lease_seconds)
            batch, self._pending = self._pending, []
            self._settling = batch
            ops: dict[str, list[FinishOp]] = {}
            for run in batch:
                queue_ops = ops.get(run.job.queue)
                if queue_ops is None:
                    queue_ops = ops[run.job.queue] = []
                queue_ops.append(finish_op(run))
            try:
                if self._progress is not None:
                    await self._progress.flush(batch)
                verdicts = await self.broker.finish(ops)
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
                backoff = min(backoff * 2, RECONNECT_MAX_SECONDS, self._lease_seconds / 3)
                continue
            self._settling = []
            per_queue = {queue: iter(applied) for queue, applied in verdicts.items()}
            try:
                for run in batch:
                    self._applied(run, next(per_queue[run.job.queue]))
            finally:
                self._log.added()

    def _applied(self, run: Run, verdict: Applied) -> None:
        """Count, log and announce what the broker applied for one run."""
        job = run.job
        log = self._log
        stats = self.stats
        seconds = run.duration_s
        if verdict == _COMPLETED:
            stats.succeeded += 1
            self.histogram.observe(job.type, "succeeded", seconds)
            log.add("INFO", job, f"succeeded in {seconds * 1000:.1f} ms")
            self._observers.emit("succeeded", job, seconds)
        elif verdict == _RETRYING:
            stats.failed_attempts += 1
            stats.retried += 1
            self.histogram.observe(job.type, "failed", seconds)
            delay_ms = run.outcome.delay_ms if run.outcome is not None else 0
            log.add("WARNING", job, f"attempt failed after {seconds * 1000:.1f} ms: {run.error}")
            log.add("WARNING", job, f"retry scheduled in {delay_ms / 1000:.2f}s")
            self._observers.emit("attempt_failed", job, seconds, run.error)
            self._observers.emit("retry_scheduled", job, seconds, run.error)
        elif verdict == _FAILED:
            stats.failed_attempts += 1
            stats.failed += 1
            self.histogram.observe(job.type, "failed", seconds)
            log.add("ERROR", job, f"failed for good after {job.attempt} attempt(s): {run.error}")
            self._observers.emit("attempt_failed", job, seconds, run.error)
            self._observers.emit("failed", job, seconds, run.error)
        elif verdict == _RELEASED:
            stats.released += 1
            log.add("INFO", job, "released back to the queue (worker stopping)")
        elif verdict == _CANCELLED:
            stats.cancelled += 1
            self.histogram.observe(job.type, "cancelled", seconds)
            log.add("INFO", job, f"cancelled after {seconds * 1000:.1f} ms")
        elif verdict == _STALE:
            stats.stale += 1
            kind = run.outcome.kind if run.outcome is not None else "outcome"
            log.add(
                "WARNING",
                job,
                f"stale lease: {kind} refused (the lease expired and the job was handed on)",
            )
        else:
            log.add("WARNING", job, "job record vanished before its outcome was reported")
