"""The broker contract: what every part of WorkQueue may ask of the job store, typed.

Producer, client, worker parts, admin commands and ``/metrics`` talk to Redis only through
:class:`BrokerAPI`; :class:`workqueue.broker.broker.Broker` is its Redis implementation.
Results cross the Python/Lua boundary as the named structs and enums below, and each rule of
the state machine (retry or fail, recover or give up, keep or trim) lives in one place: the
script that applies it reports *what it applied*, and Python never recomputes it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import msgspec

from workqueue.job import JobInfo, NewJob, ReservedJob

__all__ = [
    "Applied",
    "BrokerAPI",
    "CancelOutcome",
    "CancelResult",
    "Dropped",
    "DroppedReason",
    "EnqueueResult",
    "FinishOp",
    "HousekeepResult",
    "JobLocation",
    "Lease",
    "OpKind",
    "PurgeStep",
    "QueueFigures",
    "QueueSettings",
    "Recovered",
    "RecoveredOutcome",
    "RenewResult",
    "ReserveResult",
    "SystemFigures",
    "WorkerAdvert",
]


class OpKind(enum.StrEnum):
    """What a worker reports about one attempt."""

    ACK = "ack"
    FAIL = "fail"
    RELEASE = "release"
    #: the run stopped because the job was asked to cancel (renew said so): ends it cancelled
    CANCEL = "cancel"


class Applied(enum.StrEnum):
    """What ``finish`` did with one op (the script's own verdict, never recomputed)."""

    COMPLETED = "completed"
    RETRYING = "retrying"
    FAILED = "failed"
    RELEASED = "released"
    #: ended cancelled (a cancel op, or a fail/release while a cancel was pending)
    CANCELLED = "cancelled"
    #: refused: the job is no longer leased under the op's token (it was handed on)
    STALE = "stale"
    #: no such job record (deleted, or retention already removed it)
    MISSING = "missing"


class RecoveredOutcome(enum.StrEnum):
    """What housekeeping did with a job whose lease had expired."""

    REQUEUED = "requeued"
    FAILED = "failed"
    #: a cancel was pending when the lease expired: the job ended cancelled, not requeued
    CANCELLED = "cancelled"


class DroppedReason(enum.StrEnum):
    """Why an index entry or record was not run as it is."""

    #: an index entry without a job record: dropped
    ORPHAN = "orphan"
    #: an index entry that disagrees with its record's status: dropped
    STRAY = "stray"
    #: a record that cannot be run (no type, a counter that is not an integer): failed
    INVALID = "invalid"


class Lease(msgspec.Struct, frozen=True):
    """One lease a worker holds: the job and the fencing token of that reservation."""

    job_id: str
    token: str


class FinishOp(msgspec.Struct, frozen=True):
    """One outcome for ``finish``: ack with a result, fail, or release."""

    op: OpKind
    job_id: str
    token: str
    #: ack: the result as JSON; fail: the error text; release: unused
    data: bytes | str = b""
    #: fail: the retry delay in ms, or -1 when the job must not be retried
    delay_ms: int = -1
    #: fail: the attempt timed out (the attempt history says ``timed_out``, not ``failed``)
    timed_out: bool = False


class RenewResult(msgspec.Struct):
    """What ``renew`` found, per queue: the leases lost, and the leases held whose job is
    asked to cancel (the worker stops those runs and reports :attr:`OpKind.CANCEL`)."""

    lost: dict[str, list[Lease]] = msgspec.field(default_factory=dict)
    cancel: dict[str, list[Lease]] = msgspec.field(default_factory=dict)


class CancelOutcome(enum.StrEnum):
    """What ``cancel`` did."""

    #: the job was queued, scheduled or retrying: it is cancelled now
    CANCELLED = "cancelled"
    #: the job is running: its worker is asked to stop it (it ends cancelled within lease/3)
    CANCELLING = "cancelling"
    #: the job had finished already (completed, failed or cancelled): nothing done
    FINISHED = "finished"


class CancelResult(msgspec.Struct, frozen=True):
    """The answer of ``cancel``: what was done and the job as it is now."""

    outcome: CancelOutcome
    job: JobInfo


class EnqueueResult(msgspec.Struct, frozen=True):
    """One job written (or found already there) by ``enqueue``."""

    id: str
    status: str
    #: True when an existing job was found (same idempotency key or same id)
    duplicate: bool
    fingerprint: str
    enqueued_at_ms: int


class Recovered(msgspec.Struct, frozen=True):
    """A job whose lease had expired, handled by housekeeping."""

    job_id: str
    queue: str
    type: str
    outcome: RecoveredOutcome
    #: the job's lost-lease count after this recovery
    lost: int = 0


class Dropped(msgspec.Struct, frozen=True):
    """An entry that was not run as it is (see :class:`DroppedReason`)."""

    job_id: str
    queue: str
    reason: DroppedReason
    type: str = ""


class ReserveResult(msgspec.Struct):
    """What one reserve call on one queue handed out."""

    queue: str
    now_ms: int
    #: earliest due time of a scheduled or retrying job of the queue (None: none waiting)
    next_due_ms: int | None
    jobs: list[ReservedJob] = msgspec.field(default_factory=list)
    dropped: list[Dropped] = msgspec.field(default_factory=list)
    #: True when this was a replay of a call whose reply was lost
    replayed: bool = False


class HousekeepResult(msgspec.Struct):
    """One bounded step of a queue's housekeeping duty."""

    queue: str
    #: False when another process holds the duty for this queue (nothing was done)
    held: bool
    now_ms: int = 0
    recovered: list[Recovered] = msgspec.field(default_factory=list)
    dropped: list[Dropped] = msgspec.field(default_factory=list)
    promoted: int = 0
    trimmed: int = 0
    #: ``(job id, status)`` of records put back into the index of their status
    repaired: list[tuple[str, str]] = msgspec.field(default_factory=list)
    #: when the next step has something to do (lease expiry or due time, ms Redis clock)
    next_ms: int | None = None
    #: True when a bound was hit and more work is waiting now
    more: bool = False


class QueueSettings(msgspec.Struct, frozen=True):
    """Fleet-wide settings of one queue, kept in Redis and read by every process.

    A process's own flags are only the defaults for a queue nobody has configured.
    """

    #: seconds a completed job's record is kept (0: deleted as soon as it completes)
    completed_ttl_s: float = 24 * 3600
    #: seconds a failed job's record is kept (0: deleted as soon as it fails)
    failed_ttl_s: float = 7 * 24 * 3600
    #: a job whose lease expires this many times fails for good
    max_lost_leases: int = 3
    #: True when these were read from Redis (set by ``workqueue queues set``)
    configured: bool = False


class WorkerAdvert(msgspec.Struct, frozen=True):
    """What a live worker says about itself in the registry."""

    id: str
    host: str
    pid: int
    queues: list[str]
    types: list[str]
    concurrency: int
    started_at: float
    last_seen_ms: int = 0


class QueueFigures(msgspec.Struct):
    """One queue's counters and index sizes, as ``/metrics``, ``stats`` and the CLI show them."""

    queue: str
    queued: int = 0
    running: int = 0
    scheduled: int = 0
    retrying: int = 0
    completed_kept: int = 0
    failed_kept: int = 0
    cancelled_kept: int = 0
    oldest_waiting_seconds: float = 0.0
    #: the queue is paused (SPEC 11: its settings' ``paused``; any partition's)
    paused: bool = False
    #: the queue's stats hash: ``done``, ``failed``, ``enqueued``, ``done|<type>``...
    counters: dict[str, int] = msgspec.field(default_factory=dict)


class SystemFigures(msgspec.Struct):
    """Every known queue's figures, read in a bounded number of round trips."""

    now_ms: int
    queues: list[QueueFigures] = msgspec.field(default_factory=list)


@runtime_checkable
class BrokerAPI(Protocol):
    """Every operation on the job store. One call is one atomic state change per queue."""

    # -- producer and client --------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[EnqueueResult]:
        """Write jobs (one atomic script call per queue and chunk); answers in order."""
        ...

    async def get_job(self, job_id: str, queue: str | None = None) -> JobInfo:
        """The job with this id (searching every known queue unless ``queue`` is given)."""
        ...

    # -- the worker's hot path ------------------------------------------------------------

    async def reserve(
        self, queue: str, count: int, *, lease_ms: int, worker_id: str, request_id: str
    ) -> ReserveResult:
        """Lease up to ``count`` jobs of ``queue``. A call repeated with the same request id
        (its reply was lost) hands out the jobs the first call leased; replay is per queue."""
        ...

    async def finish(self, ops: Mapping[str, Sequence[FinishOp]]) -> dict[str, list[Applied]]:
        """Apply outcomes ``{queue: [op]}``, fenced by token; what was applied, per op."""
        ...

    async def renew(self, leases: Mapping[str, Sequence[Lease]], *, lease_ms: int) -> RenewResult:
        """Extend leases still held under their tokens; returns the leases lost and the
        leases whose job is asked to cancel, per queue."""
        ...

    async def set_progress(self, values: Mapping[str, Sequence[tuple[Lease, str]]]) -> list[str]:
        """Write handlers' progress ``{queue: [(lease, JSON text)]}`` into the job records,
        each only while its lease is held under its token; returns the ids refused."""
        ...

    # -- controlling jobs -------------------------------------------------------------------

    async def cancel(self, job_id: str, queue: str | None = None) -> CancelResult:
        """Cancel a job (searching every known queue unless ``queue`` is given): a waiting
        one at once, a running one by asking its worker to stop it; :class:`JobNotFound`
        when there is no such job."""
        ...

    async def wait_for_work(self, queues: Sequence[str], timeout_s: float) -> bool:
        """Block until a queue has news (a wake-up token) or the timeout; True when woken."""
        ...

    # -- housekeeping (one elected process per queue) -------------------------------------

    async def housekeep(self, queue: str, *, worker_id: str, duty_ms: int) -> HousekeepResult:
        """Take or keep the queue's housekeeping duty for ``duty_ms`` and do one bounded step:
        recover expired leases, promote due jobs, trim retention, check consistency."""
        ...

    # -- settings and registry ------------------------------------------------------------

    async def queue_settings(self, queues: Sequence[str]) -> dict[str, QueueSettings]:
        """The fleet-wide settings of these queues (defaults for unconfigured ones)."""
        ...

    async def set_queue_settings(
        self,
        queue: str,
        *,
        completed_ttl_s: float | None = None,
        failed_ttl_s: float | None = None,
        max_lost_leases: int | None = None,
    ) -> QueueSettings:
        """Change a queue's fleet-wide settings; returns them as now stored."""
        ...

    async def known_queues(self) -> list[str]:
        """Every queue that has been enqueued to or configured."""
        ...

    async def heartbeat(self, advert: WorkerAdvert, ttl_s: int) -> None:
        """Advertise a live worker for ``ttl_s``; forget workers silent for longer."""
        ...

    async def unregister(self, worker_id: str) -> None:
        """Remove a stopping worker from the registry."""
        ...

    async def workers(self) -> list[WorkerAdvert]:
        """The live workers' adverts."""
        ...

    # -- operating and reading (the read model: workqueue.broker.reads.ReadModel) ---------

    async def requeue_failed(self, queue: str, job_ids: Sequence[str]) -> list[str]:
        """Send failed jobs back to their queue; returns the ids requeued."""
        ...

    async def figures(self, queues: Sequence[str] = ()) -> SystemFigures:
        """The read model: every known queue (plus ``queues``) in a bounded number of round
        trips; ``/metrics``, ``workqueue stats`` and ``queues list`` all read this."""
        ...

    async def queue_figures(self, queues: Sequence[str]) -> SystemFigures:
        """The figures of these queues only, in the order given (known or not)."""
        ...

    async def advertised_types(self) -> set[str]:
        """The job types the live workers advertise (read from :meth:`workers`)."""
        ...

    async def list_jobs(
        self, status: str, queue: str | None = None, limit: int = 50
    ) -> list[JobInfo]:
        """Up to ``limit`` jobs in ``status`` (one queue, or every known queue): queued jobs
        oldest first, the other statuses newest first by their index score."""
        ...

    async def locate_jobs(
        self, job_ids: Sequence[str], queue: str | None = None
    ) -> list[JobLocation]:
        """Where these jobs are (one queue, or every known queue), in the order asked;
        unknown ids are left out."""
        ...

    async def finished_ids(
        self, queue: str, status: str, *, until_ms: int, offset: int = 0, count: int = 500
    ) -> list[str]:
        """Ids in a finished index (``completed`` or ``failed``) that finished at or before
        ``until_ms``, oldest first, from position ``offset``."""
        ...

    async def purge_finished(
        self, queue: str, status: str, *, batch: int = 500, cutoff_ms: int | None = None
    ) -> PurgeStep:
        """Delete up to ``batch`` finished records of one status (one atomic script call);
        ``cutoff_ms`` None: jobs finishing after this call's Redis time are left alone."""
        ...

    async def server_time_ms(self) -> int:
        """Redis's clock, ms (the clock every job time is stamped with)."""
        ...

    async def ping(self) -> None:
        """Raise unless Redis answers (the producer's readiness check)."""
        ...

    async def aclose(self) -> None:
        """Close the connections."""
        ...


# -- results of the operating and reading section ------------------------------------------


class JobLocation(msgspec.Struct, frozen=True):
    """Where one job is: its queue, its status and its type, as its record says."""

    job_id: str
    queue: str
    status: str
    type: str = ""


class PurgeStep(msgspec.Struct, frozen=True):
    """One batch of a purge."""

    #: the cutoff this batch used (ms, Redis clock): pass it to the next batch
    cutoff_ms: int
    #: index entries looked at (fewer than the batch size: the index is done)
    examined: int
    #: records deleted
    deleted: int
