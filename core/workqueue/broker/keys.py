"""The Redis key layout: the one place that knows how keys are named.

Every key of one queue carries the hash tag ``{queue}``, so each Lua script touches a single
slot and the same code runs on Redis Cluster. Global keys (the queue and worker registries) are
only ever written outside job scripts, with idempotent commands (the worker registry by the
one-key ``heartbeat`` script, which stamps it with Redis ``TIME``).

``<p>`` is the key prefix (default ``wq``), ``<q>`` the queue name::

    <p>:{<q>}:queued      LIST   ids waiting to run now, oldest first
    <p>:{<q>}:scheduled   ZSET   id -> due time (ms, Redis clock) of delayed jobs
    <p>:{<q>}:retry       ZSET   id -> due time (ms) of jobs waiting out a retry backoff
    <p>:{<q>}:active      ZSET   id -> lease deadline (ms) of running jobs
    <p>:{<q>}:leases      HASH   id -> the live lease: token, type, idempotency key (one
                                 string, newline-separated, the key last);
                                 an entry exists iff the record is active under that token
    <p>:{<q>}:completed   ZSET   id -> finish time (ms) of kept completed records
    <p>:{<q>}:failed      ZSET   id -> finish time (ms) of kept failed records
    <p>:{<q>}:cancelled   ZSET   id -> finish time (ms) of kept cancelled records (kept for
                                 the failed retention)
    <p>:{<q>}:ledger      ZSET   id -> enqueued_at (ms) of every job record of the queue
    <p>:{<q>}:settings    HASH   fleet-wide settings: completed_ttl_ms, failed_ttl_ms,
                                 max_lost_leases (unset fields: the process's defaults);
                                 partition 0's also holds the partition layout: partitions,
                                 partitions_draining, partitions_retired,
                                 partitions_changed_ms (written by partitions.lua only)
    <p>:{<q>}:housekeeper STRING id of the process holding the housekeeping duty (PX duty)
    <p>:{<q>}:hk-cursor   HASH   id, score: where the consistency check's ledger walk resumes
    <p>:{<q>}:enq:<call>  STRING mark of one enqueue call (PX 60 s): a repeat only answers
    <p>:{<q>}:reserved-by:<worker> HASH req, jobs: a worker's last reserve (PX lease)
    <p>:{<q>}:stats       HASH   counters moved inside the job scripts (done, failed, ...)
    <p>:{<q>}:notify      LIST   wake-up tokens for idle workers blocked in BLPOP (capped)
    <p>:{<q>}:token       STRING fencing-token sequence of the queue
    <p>:{<q>}:job:<id>    HASH   the job record (no expiry: housekeeping trims finished ones)
    <p>:{<q>}:idem:<key>  STRING idempotency key -> job id (expires; never after its record)
    <p>:queues            SET    names of the queues ever used (capped: max_queues)
    <p>:workers           ZSET   worker id -> last heartbeat (ms, Redis clock)
    <p>:worker:<id>       STRING JSON description of a live worker (expires)

Partitioned queues (see ``partitions.py``): ``<q>`` above is a *physical* queue. Partition 0
of a logical queue ``q`` is ``q`` itself; partition i of a layout of N partitions is
``q#<i>of<N>.<s>`` (``#`` is never in a queue name; ``<s>`` puts its slot at ``i/N`` of the
ring after ``q``'s). Each partition has every key above; the registry ``<p>:queues`` holds
logical names only.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_PREFIX", "GlobalKeys", "QueueKeys"]

DEFAULT_PREFIX = "wq"


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one queue, all in the queue's hash slot."""

    prefix: str
    queue: str

    @property
    def base(self) -> str:
        """``<prefix>:{<queue>}:``, the start of every key of this queue."""
        return f"{self.prefix}:{{{self.queue}}}:"

    @property
    def queued(self) -> str:
        return self.base + "queued"

    @property
    def scheduled(self) -> str:
        return self.base + "scheduled"

    @property
    def retry(self) -> str:
        return self.base + "retry"

    @property
    def active(self) -> str:
        return self.base + "active"

    @property
    def leases(self) -> str:
        """The live leases (id -> token, type, idempotency key): finish and renew check a
        whole batch with one HMGET here instead of reading each job record."""
        return self.base + "leases"

    @property
    def completed(self) -> str:
        return self.base + "completed"

    @property
    def failed(self) -> str:
        return self.base + "failed"

    @property
    def cancelled(self) -> str:
        """Kept cancelled records (id -> finish time), trimmed under the failed retention."""
        return self.base + "cancelled"

    @property
    def stats(self) -> str:
        return self.base + "stats"

    @property
    def notify(self) -> str:
        return self.base + "notify"

    @property
    def token(self) -> str:
        return self.base + "token"

    @property
    def job_prefix(self) -> str:
        return self.base + "job:"

    @property
    def idem_prefix(self) -> str:
        return self.base + "idem:"

    @property
    def ledger(self) -> str:
        return self.base + "ledger"

    @property
    def settings(self) -> str:
        return self.base + "settings"

    @property
    def housekeeper(self) -> str:
        return self.base + "housekeeper"

    @property
    def hk_cursor(self) -> str:
        return self.base + "hk-cursor"

    def enqueue_mark(self, call_id: str) -> str:
        """The mark of one enqueue call (a repeated call finds it and writes nothing)."""
        return self.base + "enq:" + call_id

    def reserve_record(self, worker_id: str) -> str:
        """What a worker's last reserve call leased (so a retried call gets the same jobs)."""
        return self.base + "reserved-by:" + worker_id

    def job(self, job_id: str) -> str:
        """The record of one job."""
        return self.job_prefix + job_id


@dataclass(frozen=True, slots=True)
class GlobalKeys:
    """Keys shared by all queues (registries only; no job state lives here)."""

    prefix: str = DEFAULT_PREFIX

    @property
    def queues(self) -> str:
        return f"{self.prefix}:queues"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"
