"""Reading one job's payload, for the dashboard's "show payload" button (payload on request).

Kept apart from :mod:`workqueue.broker.reads`: ``GET /jobs/{id}`` never shows a payload, and
this is the only read that does, so it is easy to audit. One round trip: ``SMEMBERS`` of the
queue registry is skipped when the queue is known, then one pipelined ``HMGET`` per queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workqueue.errors import JobNotFound

if TYPE_CHECKING:
    from workqueue.broker.broker import Broker

__all__ = ["read_payload"]


async def read_payload(broker: Broker, job_id: str, queue: str | None = None) -> bytes:
    """The raw JSON payload of a job (``b"null"`` when it has none); JobNotFound if unknown."""
    queues = [queue] if queue else await broker.known_queues()
    if queues:
        async with broker.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.hmget(broker.keys(q).job(job_id), "status", "payload")
            replies = await pipe.execute()
        for status, payload in replies:
            if status is not None:
                return bytes(payload) if payload else b"null"
    raise JobNotFound(job_id)
