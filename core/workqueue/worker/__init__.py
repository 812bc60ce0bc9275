"""The asyncio worker: a thin :class:`Worker` assembling its parts (fetching, executing,
settling outcomes, keeping leases, housekeeping, heartbeat; see docs/worker.md), and
the ``--processes`` supervisor."""

from workqueue.worker.runner import Worker

__all__ = ["Worker"]
