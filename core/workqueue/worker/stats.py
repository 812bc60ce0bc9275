"""This worker process's own figures (``/metrics`` shows them under ``worker``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from workqueue import clock

__all__ = ["WorkerStats"]


@dataclass(slots=True)
class WorkerStats:
    """This process's own counters."""

    started_at: float = field(default_factory=clock.now)
    #: monotonic start, for the uptime (immune to wall-clock steps)
    started_monotonic: float = field(default_factory=time.monotonic)
    reserved: int = 0
    succeeded: int = 0
    failed_attempts: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    #: jobs this process ended cancelled (the job was asked to cancel while it ran)
    cancelled: int = 0
    stale: int = 0
    #: expired leases this process recovered as its queues' housekeeper
    recovered: int = 0
    #: runs cancelled because renewal found their lease gone
    lost: int = 0
    last_fetch_at: float = 0.0
