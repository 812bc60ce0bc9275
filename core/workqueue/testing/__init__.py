"""Helpers for testing job types and plugins (see docs/plugins.md, "Testing your plugin").

- :func:`run_job` / :func:`run_job_sync`: one attempt of a handler as a worker runs it (payload
  validated against the schema, a realistic :class:`~workqueue.JobContext`, the outcome as the
  worker records it), no Redis needed.
- :class:`InProcessWorker`: a real worker in the test's event loop on a given Redis URL and key
  prefix, with a client to enqueue and wait for a job's final state.
- The pytest fixture ``workqueue_worker`` (registered through the ``pytest11`` entry point of
  ``workqueue-core``, so installing the package is enough): a factory of started
  :class:`InProcessWorker` objects, stopped and their keys deleted after the test.

Only the names below are public, loaded on first use; pytest is imported only by the plugin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workqueue._lazy import lazy_getattr

if TYPE_CHECKING:
    from workqueue.testing.handler import (
        AttemptResult,
        CancelSwitch,
        LogLine,
        make_context,
        run_job,
        run_job_sync,
    )
    from workqueue.testing.worker import FINAL_STATUSES, InProcessWorker, JobDidNotFinish

__all__ = [
    "FINAL_STATUSES",
    "AttemptResult",
    "CancelSwitch",
    "InProcessWorker",
    "JobDidNotFinish",
    "LogLine",
    "make_context",
    "run_job",
    "run_job_sync",
]

# Loaded on first use (PEP 562): the pytest plugin lives in this package and is imported by
# every pytest run in an environment with workqueue-core; it must not load Redis and the worker.
_WHERE = {
    "AttemptResult": "workqueue.testing.handler",
    "CancelSwitch": "workqueue.testing.handler",
    "LogLine": "workqueue.testing.handler",
    "make_context": "workqueue.testing.handler",
    "run_job": "workqueue.testing.handler",
    "run_job_sync": "workqueue.testing.handler",
    "FINAL_STATUSES": "workqueue.testing.worker",
    "InProcessWorker": "workqueue.testing.worker",
    "JobDidNotFinish": "workqueue.testing.worker",
}

__getattr__ = lazy_getattr(__name__, _WHERE)


def __dir__() -> list[str]:
    return sorted(__all__)
