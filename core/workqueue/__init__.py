"""WorkQueue: a distributed background job platform on Redis.

The public API for applications and plugin authors::

    from workqueue import JobContext, JobType, PermanentError, hookimpl
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workqueue._lazy import lazy_getattr

if TYPE_CHECKING:
    from workqueue.client import Client, SyncClient, TaskSpec
    from workqueue.errors import (
        BrokerUnavailable,
        IdempotencyConflict,
        JobNotFound,
        PayloadValidationError,
        PermanentError,
        RetryLater,
        TaskValidationError,
        UnknownJobTypeError,
        WorkQueueError,
    )
    from workqueue.hookspecs import JobEvent, WorkerInfo, hookimpl
    from workqueue.jobtypes import Backoff, JobContext, JobType
    from workqueue.schedules.model import Schedule

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "BrokerUnavailable",
    "Client",
    "IdempotencyConflict",
    "JobContext",
    "JobEvent",
    "JobNotFound",
    "JobType",
    "PayloadValidationError",
    "PermanentError",
    "RetryLater",
    "Schedule",
    "SyncClient",
    "TaskSpec",
    "TaskValidationError",
    "UnknownJobTypeError",
    "WorkQueueError",
    "WorkerInfo",
    "__version__",
    "hookimpl",
]

# The public names are loaded on first use (PEP 562): the CLI and the worker supervisor start
# without importing the Redis client, and ``import workqueue`` stays cheap.
_WHERE = {
    "Client": "workqueue.client",
    "SyncClient": "workqueue.client",
    "TaskSpec": "workqueue.client",
    "BrokerUnavailable": "workqueue.errors",
    "IdempotencyConflict": "workqueue.errors",
    "JobNotFound": "workqueue.errors",
    "PayloadValidationError": "workqueue.errors",
    "PermanentError": "workqueue.errors",
    "RetryLater": "workqueue.errors",
    "TaskValidationError": "workqueue.errors",
    "UnknownJobTypeError": "workqueue.errors",
    "WorkQueueError": "workqueue.errors",
    "JobEvent": "workqueue.hookspecs",
    "WorkerInfo": "workqueue.hookspecs",
    "hookimpl": "workqueue.hookspecs",
    "Backoff": "workqueue.jobtypes",
    "JobContext": "workqueue.jobtypes",
    "JobType": "workqueue.jobtypes",
    "Schedule": "workqueue.schedules.model",
}


__getattr__ = lazy_getattr(__name__, _WHERE)


def __dir__() -> list[str]:
    return sorted(__all__)
