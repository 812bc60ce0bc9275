"""The one error tree of WorkQueue.

Every error the core raises on purpose derives from :class:`WorkQueueError`, so callers can catch
the family at once and the producer can map each kind to one HTTP answer in one place.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "BrokerUnavailable",
    "ConfigurationError",
    "DuplicateJobTypeError",
    "DurabilityError",
    "IdempotencyConflict",
    "InvalidJobError",
    "JobNotFound",
    "PayloadValidationError",
    "PermanentError",
    "PluginError",
    "PluginLoadError",
    "QueueLimitError",
    "RetryLater",
    "TaskValidationError",
    "UnknownJobTypeError",
    "WorkQueueError",
]


class WorkQueueError(Exception):
    """Base class of every error WorkQueue raises on purpose."""


class ConfigurationError(WorkQueueError):
    """Raised when a setting, flag or environment variable has an unusable value."""


class PluginError(WorkQueueError):
    """Raised when the installed plugins cannot be loaded into a consistent registry."""


class PluginLoadError(PluginError):
    """Raised when a plugin's entry point fails to import or its hooks return bad data."""

    def __init__(self, plugin: str, reason: str) -> None:
        self.plugin = plugin
        self.reason = reason
        super().__init__(f"plugin {plugin!r} failed to load: {reason}")


class DuplicateJobTypeError(PluginError):
    """Raised when two plugins register the same job type name."""

    def __init__(self, job_type: str, first: str, second: str) -> None:
        self.job_type = job_type
        self.plugins = (first, second)
        super().__init__(
            f"job type {job_type!r} is registered by two plugins: {first!r} and {second!r}; "
            "uninstall one of them or restrict loading with WORKQUEUE_PLUGINS"
        )


class TaskValidationError(WorkQueueError):
    """Raised when a task's fields (type, retries, timeout, delay...) are invalid."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class PayloadValidationError(TaskValidationError):
    """Raised when a payload does not match its job type's ``payload_schema``."""


class UnknownJobTypeError(TaskValidationError):
    """Raised when a task names a job type that no installed plugin or live worker knows."""

    def __init__(self, job_type: str, known: Iterable[str]) -> None:
        self.job_type = job_type
        self.known = sorted(set(known))
        listed = ", ".join(self.known) if self.known else "none"
        super().__init__("type", f"unknown job type {job_type!r}; known types: {listed}")


class QueueLimitError(TaskValidationError):
    """Raised when an enqueue would add a queue beyond the configured number of queues
    (``max_queues``): queue names come from clients, and every queue costs Redis keys and
    housekeeping, so the registry of queues is capped rather than left to grow."""

    def __init__(self, queue: str, limit: int) -> None:
        self.queue = queue
        self.limit = limit
        super().__init__(
            "queue",
            f"cannot add queue {queue!r}: the limit of {limit} queues is reached "
            "(WORKQUEUE_MAX_QUEUES)",
        )


class IdempotencyConflict(WorkQueueError):
    """Raised when an idempotency key is reused with a different task body."""

    def __init__(self, key_job_id: str) -> None:
        self.job_id = key_job_id
        super().__init__(
            "this Idempotency-Key was already used for a different task "
            f"(job {key_job_id}); use a new key for a new task"
        )


class JobNotFound(WorkQueueError):
    """Raised when no job with the given id exists (or it has passed its retention)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id!r}")


class BrokerUnavailable(WorkQueueError):
    """Raised when Redis cannot be reached or cannot accept writes right now."""


class DurabilityError(BrokerUnavailable):
    """Raised when an enqueue was written but fewer replicas than asked for (durable enqueue)
    acknowledged it in time: the jobs may survive or be lost in a failover. Repeating the
    call with the same idempotency keys answers the same jobs (and waits again)."""

    def __init__(self, wanted: int, acked: int, timeout_s: float, job_ids: list[str]) -> None:
        self.wanted = wanted
        self.acked = acked
        self.timeout_s = timeout_s
        self.job_ids = job_ids
        super().__init__(
            f"the write reached {acked} of the {wanted} replicas asked for within "
            f"{timeout_s:g} s (durable enqueue); it may be lost in a failover: retry with the "
            "same Idempotency-Key"
        )


class InvalidJobError(WorkQueueError):
    """Raised when a job record read from Redis cannot be run (corrupt, tampered or too large).

    Such a job fails for good at once: retrying cannot repair its record.
    """


class PermanentError(WorkQueueError):
    """Raised by a handler to fail the job for good, without using its remaining retries."""


class RetryLater(WorkQueueError):
    """Raised by a handler to fail this attempt and ask for the next one after ``delay_seconds``.

    It counts as a failed attempt like any other exception; only the backoff delay is replaced
    (for example by an HTTP ``Retry-After``). When no retries remain the job fails for good.
    """

    def __init__(self, message: str, delay_seconds: float) -> None:
        self.delay_seconds = max(0.0, float(delay_seconds))
        super().__init__(message)
