"""WorkQueue: a distributed background job platform on Redis.

The public API for applications and plugin authors::

    from workqueue import JobContext, JobType, PermanentError, hookimpl
"""

from __future__ import annotations

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
    "SyncClient",
    "TaskSpec",
    "TaskValidationError",
    "UnknownJobTypeError",
    "WorkQueueError",
    "WorkerInfo",
    "__version__",
    "hookimpl",
]
