"""The asyncio worker: fetch loop, job execution, lease renewal, graceful stop, supervisor."""

from workqueue.worker.runner import Worker

__all__ = ["Worker"]
