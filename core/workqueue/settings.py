"""Typed settings built from flags and ``WORKQUEUE_*`` variables (the CLI fills them in)."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field

from workqueue.broker.config import BrokerConfig
from workqueue.errors import ConfigurationError
from workqueue.jobtypes import NAME_PATTERN

__all__ = ["DEFAULT_REDIS_URL", "WorkerSettings", "new_worker_id"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def new_worker_id() -> str:
    """A readable, unique worker id: host, pid and a short random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How one worker process runs.

    ``broker`` carries the retention and lost-lease flags of this process
    (``--completed-ttl``, ``--failed-ttl``, ``--max-lost-leases``): they are only the defaults
    for queues nobody has configured; a queue's fleet-wide settings in Redis (``workqueue
    queues set``) win.
    """

    redis_url: str = DEFAULT_REDIS_URL
    queues: tuple[str, ...] = ("default",)
    concurrency: int = 50
    lease_seconds: float = 30.0
    grace_seconds: float = 30.0
    #: longest blocking wait when idle; bounds how stale housekeeping can get
    idle_wait_seconds: float = 10.0
    heartbeat_seconds: float = 10.0
    #: longest pause between two housekeeping steps of a queue (lease recovery, promotion of
    #: due jobs, retention, consistency check); a step is taken sooner when a lease expires or a
    #: job falls due earlier. 0 = this process never takes the housekeeping duty.
    housekeep_seconds: float = 10.0
    #: plain ``def`` handlers still running after their attempt ended (timed out, lease lost)
    #: that make this process stop fetching and recycle itself (None: max(1, concurrency // 2))
    max_hung_threads: int | None = None
    max_payload_bytes: int = 1024 * 1024
    max_result_bytes: int = 1024 * 1024
    #: port of the /metrics server (None = no server)
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    worker_id: str = field(default_factory=new_worker_id)
    broker: BrokerConfig = field(default_factory=BrokerConfig)

    def __post_init__(self) -> None:
        if not self.queues:
            raise ConfigurationError("at least one queue is needed")
        for queue in self.queues:
            if not NAME_PATTERN.match(queue):
                raise ConfigurationError(
                    f"queue name {queue!r} must be 1-128 characters of A-Za-z0-9_.:-"
                )
        if self.concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1")
        if self.lease_seconds < 0.5:
            raise ConfigurationError("lease seconds must be at least 0.5")
        if self.housekeep_seconds < 0:
            raise ConfigurationError("housekeep seconds must not be negative")
        if self.max_hung_threads is not None and self.max_hung_threads < 1:
            raise ConfigurationError("max hung threads must be at least 1")
        if self.grace_seconds < 0:
            raise ConfigurationError("grace seconds must not be negative")

    @property
    def lease_ms(self) -> int:
        """The lease in milliseconds, as the broker takes it."""
        return int(self.lease_seconds * 1000)

    @property
    def hung_threshold(self) -> int:
        """Hung handler threads at which this process recycles itself."""
        if self.max_hung_threads is not None:
            return self.max_hung_threads
        return max(1, self.concurrency // 2)
