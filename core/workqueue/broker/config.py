"""A process's broker settings: :class:`BrokerConfig` (no Redis client imported here, so the
CLI and the supervisor read their options without loading one)."""

from __future__ import annotations

from dataclasses import dataclass

from workqueue.broker.keys import DEFAULT_PREFIX
from workqueue.errors import ConfigurationError

__all__ = ["BrokerConfig"]


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Settings of one process. Retention and the lost-lease cap are only the DEFAULTS for a
    queue whose fleet-wide settings (``<p>:{q}:settings``) do not set them."""

    prefix: str = DEFAULT_PREFIX
    completed_ttl_s: float = 24 * 3600
    failed_ttl_s: float = 7 * 24 * 3600
    idempotency_ttl_s: float = 24 * 3600
    max_lost_leases: int = 3
    #: the most queues ``<p>:queues`` may hold (``WORKQUEUE_MAX_QUEUES``)
    max_queues: int = 1000
    #: housekeeping bounds per step: leases recovered, due jobs promoted (per index),
    #: finished records trimmed, ledger entries checked, longest queued list checked
    recover_limit: int = 100
    promote_limit: int = 1000
    trim_limit: int = 500
    check_limit: int = 200
    check_max_list: int = 10_000
    #: seconds the consistency check rests after a complete pass over the ledger (so an idle
    #: queue with many kept records is not re-read without end; damage found within this
    #: pause plus one pass)
    check_pause_s: float = 300.0
    #: durable enqueue (``--durable-enqueue`` / ``WORKQUEUE_DURABLE_ENQUEUE``): an enqueue
    #: returns only after this many replicas acknowledged its write (Redis ``WAIT``); 0 = off
    durable_enqueue: int = 0
    #: the longest an enqueue waits for those replicas (``WORKQUEUE_DURABLE_TIMEOUT``), then
    #: :class:`~workqueue.errors.DurabilityError`
    durable_timeout_s: float = 1.0

    def __post_init__(self) -> None:
        if self.durable_enqueue < 0:
            raise ConfigurationError("durable enqueue: the number of replicas must be 0 or more")
        if not 0.001 <= self.durable_timeout_s <= 3600:
            raise ConfigurationError("durable timeout: must be 0.001 to 3600 seconds")
