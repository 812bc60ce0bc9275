"""The asyncio worker: a thin :class:`Worker` assembling its parts (fetching, executing,
settling outcomes, keeping leases, housekeeping, heartbeat; see docs/worker.md), and
the ``--processes`` supervisor.

``Worker`` is loaded on first use (PEP 562): the supervisor imports this package without the
Redis client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workqueue.worker.runner import Worker

__all__ = ["Worker"]


def __getattr__(name: str) -> Any:
    if name != "Worker":
        raise AttributeError(f"module 'workqueue.worker' has no attribute {name!r}")
    from workqueue.worker.runner import Worker

    globals()["Worker"] = Worker
    return Worker
