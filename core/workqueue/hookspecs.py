"""The plugin hooks of WorkQueue: markers and typed, documented specifications only.

Hooks are synchronous and only *register* things or hand back awaitables; the asynchronous work
lives in what they return. Plugins import ``hookimpl`` from :mod:`workqueue`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Literal

import pluggy

from workqueue.jobtypes import JobType
from workqueue.schedules.model import Schedule

__all__ = ["PROJECT_NAME", "JobEvent", "WorkerInfo", "hookimpl", "hookspec"]

PROJECT_NAME = "workqueue"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """The worker process a lifecycle hook is called for."""

    worker_id: str
    queues: tuple[str, ...]
    concurrency: int


EventKind = Literal["started", "succeeded", "attempt_failed", "retry_scheduled", "failed"]


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One thing that happened to a job in this worker; never carries payload values."""

    kind: EventKind
    job_id: str
    type: str
    queue: str
    attempt: int
    worker_id: str
    duration_seconds: float | None = None
    error: str | None = None


# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------


@hookspec
def workqueue_job_types() -> list[JobType]:  # type: ignore[empty-body]
    """Return the job types this plugin provides.

    Called once when plugins load, in the producer, the worker and the CLI. Two plugins that
    return the same name stop the process with an error naming both.
    """


@hookspec
def workqueue_schedules() -> list[Schedule]:  # type: ignore[empty-body]
    """Return the cron schedules this plugin declares (``workqueue.Schedule``).

    Each worker writes them to Redis when it starts (creating or updating the plugin's
    schedules; an operator's schedule of the same name is left alone) and every worker may fire
    them: each tick becomes exactly one job. See docs/scheduling.md.
    """


# ---------------------------------------------------------------------------------------------
# Worker lifecycle: open and close shared resources (connection pools, clients)
# ---------------------------------------------------------------------------------------------


@hookspec
def workqueue_worker_startup(worker: WorkerInfo) -> Awaitable[None] | None:
    """Called once when a worker process starts, before it takes any job.

    Return an awaitable (for example ``return open_pool()``) to do asynchronous set-up inside the
    worker's event loop; an exception stops the worker with a message naming the plugin.
    """


@hookspec
def workqueue_worker_shutdown(worker: WorkerInfo) -> Awaitable[None] | None:
    """Called once when a worker process stops, after its last job finished or was released.

    Return an awaitable for asynchronous clean-up; an exception is logged and does not keep the
    other plugins from closing.
    """


# ---------------------------------------------------------------------------------------------
# Observation
# ---------------------------------------------------------------------------------------------


@hookspec
def workqueue_job_event(event: JobEvent) -> None:
    """Observe a job event in the worker (started, succeeded, attempt failed, retry, failed).

    Runs inside the worker's event loop: keep it quick. An exception is logged and ignored.
    """
