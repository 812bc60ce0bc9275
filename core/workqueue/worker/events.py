"""The worker's job event lines and plugin job events.

Event lines (``started``, ``succeeded in``, ``retry scheduled``...) are rendered at event time
by :class:`workqueue.log.EventBatch` and handed to loguru in batches: at most every
:data:`EVENT_WRITE_SECONDS`, or once :data:`EVENT_WRITE_LINES` are waiting. Plugin observers
(``workqueue_job_event``) are called in the loop, each error logged and ignored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loguru import logger

from workqueue.broker.partitions import logical_name
from workqueue.hookspecs import EventKind, JobEvent
from workqueue.job import ReservedJob
from workqueue.log import EventBatch, sanitize
from workqueue.plugins import WorkQueuePluginManager, plugin_label

if TYPE_CHECKING:
    from loguru import Logger

__all__ = ["EVENT_WRITE_LINES", "EVENT_WRITE_SECONDS", "JobLog", "JobLogger", "Observers"]

#: job event lines wait at most this long to be handed to the log sinks, in one call...
EVENT_WRITE_SECONDS = 0.05
#: ...or until this many are waiting
EVENT_WRITE_LINES = 2000

Extra = tuple[tuple[str, object], ...]


class JobLog:
    """Job event lines of one worker process, written in batches."""

    __slots__ = ("_batch", "_extras", "_timer")

    def __init__(self) -> None:
        self._batch = EventBatch()
        self._timer: asyncio.TimerHandle | None = None
        self._extras: dict[str, Extra] = {}

    def enabled(self, level: str) -> bool:
        """Whether a line of ``level`` would be written at all."""
        return self._batch.enabled(level)

    def add(self, level: str, job: ReservedJob, message: str) -> None:
        """Render one line about ``job`` (written by :meth:`added` or :meth:`write`)."""
        pairs = self.queue_pairs(job.queue)
        self._batch.add(level, job.id, job.type, job.attempt, message, pairs)

    def queue_pairs(self, queue: str) -> Extra:
        """The ``queue=`` pair of a job's lines (one tuple per queue, reused)."""
        extra = self._extras.get(queue)
        if extra is None:
            extra = self._extras[queue] = (("queue", logical_name(queue)),)  # partitions
        return extra

    def added(self) -> None:
        """Lines were added: write them soon, many batches in one loguru call (each call is a
        record pickled through a pipe to the writer thread)."""
        if len(self._batch) >= EVENT_WRITE_LINES:
            self.write()
        elif self._timer is None and len(self._batch):
            self._timer = asyncio.get_running_loop().call_later(EVENT_WRITE_SECONDS, self.write)

    def write(self) -> None:
        """Hand every waiting line to the sinks now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._batch.write()


class Observers:
    """The plugins' ``workqueue_job_event`` hooks (nothing to do when none is installed)."""

    __slots__ = ("_impls", "_log", "_pm", "_worker_id", "active")

    def __init__(self, pm: WorkQueuePluginManager | None, worker_id: str, log: JobLog) -> None:
        self._pm = pm
        self._impls = list(pm.hook.workqueue_job_event.get_hookimpls()) if pm else []
        self._worker_id = worker_id
        self._log = log
        #: checked by callers before building an event's arguments
        self.active = bool(self._impls)

    def emit(
        self,
        kind: EventKind,
        job: ReservedJob,
        duration: float | None = None,
        error: str | None = None,
    ) -> None:
        """Call every observer with one event; an observer's error is logged, not raised."""
        if not self.active or self._pm is None:
            return
        self._log.write()  # an observer's own log lines come after this event's line
        event = JobEvent(
            kind,
            job.id,
            job.type,
            logical_name(job.queue),  # partitions: the logical queue
            job.attempt,
            self._worker_id,
            duration,
            error,
        )
        for impl in self._impls:
            try:
                impl.function(event=event)
            except Exception as exc:
                logger.error(
                    "plugin {} failed in workqueue_job_event: {}",
                    plugin_label(self._pm, impl.plugin),
                    sanitize(exc),
                )


class JobLogger:
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
                job_id=job.id, type=job.type, attempt=job.attempt, queue=logical_name(job.queue)
            )
        return getattr(bound, name)
