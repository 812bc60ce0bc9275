"""Typed settings built from flags and ``WORKQUEUE_*`` variables (the CLI fills them in)."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field

from workqueue.broker.broker import BrokerConfig
from workqueue.errors import ConfigurationError
from workqueue.jobtypes import NAME_PATTERN

__all__ = ["DEFAULT_REDIS_URL", "WorkerSettings", "new_worker_id"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def new_worker_id() -> str:
    """A readable, unique worker id: host, pid and a short random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How one worker process runs."""

    redis_url: str = DEFAULT_REDIS_URL
    queues: tuple[str, ...] = ("default",)
    concurrency: int = 50
    lease_seconds: float = 30.0
    grace_seconds: float = 30.0
    #: longest blocking wait when idle; bounds how stale housekeeping can get
    idle_wait_seconds: float = 10.0
    heartbeat_seconds: float = 10.0
    #: pause between steps of the consistency sweep (each step checks up to 1000 keys of a
    #: queue's records against the indexes; 0 = no sweep)
    audit_seconds: float = 30.0
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
        if self.audit_seconds < 0:
            raise ConfigurationError("audit seconds must not be negative")
        if self.grace_seconds < 0:
            raise ConfigurationError("grace seconds must not be negative")

    @property
    def lease_ms(self) -> int:
        return int(self.lease_seconds * 1000)
