"""Helpers for testing job types and plugins (see docs/plugins.md, "Testing your plugin").

- :func:`run_job` / :func:`run_job_sync`: one attempt of a handler as a worker runs it (payload
  validated against the schema, a realistic :class:`~workqueue.JobContext`, the outcome as the
  worker records it), no Redis needed.
- :class:`InProcessWorker`: a real worker in the test's event loop on a given Redis URL and key
  prefix, with a client to enqueue and wait for a job's final state.
- The pytest fixture ``workqueue_worker`` (registered through the ``pytest11`` entry point of
  ``workqueue-core``, so installing the package is enough): a factory of started
  :class:`InProcessWorker` objects, stopped and their keys deleted after the test.

Only the names below are public; this package imports pytest only in its pytest plugin.
"""

from __future__ import annotations

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
