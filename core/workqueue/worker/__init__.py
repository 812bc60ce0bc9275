"""The asyncio worker: a thin :class:`Worker` assembling its parts (fetching, executing,
settling outcomes, keeping leases, housekeeping, heartbeat; see docs/worker.md), and
the ``--processes`` supervisor.

``Worker`` is loaded on first use (PEP 562): the supervisor imports this package without the
Redis client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workqueue._lazy import lazy_getattr

if TYPE_CHECKING:
    from workqueue.worker.runner import Worker

__all__ = ["Worker"]


__getattr__ = lazy_getattr(__name__, {"Worker": "workqueue.worker.runner"})
