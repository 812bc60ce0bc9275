"""The heartbeat: this worker's advert (queues, job types, pid) in the registry."""

from __future__ import annotations

import asyncio
import os
import socket

from loguru import logger
from redis.exceptions import RedisError

from workqueue.broker.contract import BrokerAPI, WorkerAdvert
from workqueue.log import sanitize

__all__ = ["Heartbeat"]


class Heartbeat:
    """Advertises the worker every ``period`` seconds (the advert lives three periods)."""

    def __init__(
        self,
        broker: BrokerAPI,
        *,
        worker_id: str,
        queues: tuple[str, ...],
        types: list[str],
        concurrency: int,
        started_at: float,
        period: float,
    ) -> None:
        self.broker = broker
        self.period = period
        self.advert = WorkerAdvert(
            id=worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=list(queues),
            types=types,
            concurrency=concurrency,
            started_at=started_at,
        )

    async def loop(self) -> None:
        """Beat until cancelled; a failed beat is retried at the next period."""
        ttl = max(2, int(self.period * 3))
        while True:
            try:
                await self.broker.heartbeat(self.advert, ttl)
            except (RedisError, OSError) as exc:
                logger.debug("heartbeat failed ({})", sanitize(exc, 200))
            await asyncio.sleep(self.period)

    async def unregister(self) -> None:
        """Leave the registry (best effort: the advert expires by itself anyway)."""
        try:
            await self.broker.unregister(self.advert.id)
        except (RedisError, OSError) as exc:
            logger.debug("unregister failed ({})", sanitize(exc, 200))
