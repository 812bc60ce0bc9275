"""Sending handlers' progress (``ctx.set_progress``) to the broker, coalesced.

A handler may report progress in a tight loop, from its event loop or from a handler thread:
:meth:`Run.report_progress` only keeps the latest checked value (numbered). Every
:data:`PROGRESS_INTERVAL` seconds :class:`ProgressSender` sends the latest unsent value of each
running attempt, all queues in one round trip (``progress.lua``, fenced by the attempt's
lease: a superseded attempt's value is refused), and the settler sends what is left just
before an attempt's outcome, so the last value reported is the one the record keeps. Idle
(nothing reported), the sender costs no Redis command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from loguru import logger
from redis.exceptions import RedisError

from workqueue.broker.contract import BrokerAPI, Lease
from workqueue.log import sanitize
from workqueue.worker.runs import Run

__all__ = ["PROGRESS_INTERVAL", "ProgressSender"]

#: the most often one attempt's progress is written to Redis, seconds
PROGRESS_INTERVAL = 0.5


class ProgressSender:
    """Sends the latest unsent progress of the running attempts every 0.5 s."""

    def __init__(
        self,
        broker: BrokerAPI,
        running: Callable[[], Iterable[Run]],
        interval: float = PROGRESS_INTERVAL,
    ) -> None:
        self.broker = broker
        self._running = running
        self.interval = interval
        #: values refused because the attempt's lease no longer held (tests, metrics)
        self.refused = 0

    async def loop(self) -> None:
        """Send due values until cancelled; a Redis error is logged and retried next time."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.send(self._running())
            except (RedisError, OSError) as exc:
                logger.warning("could not send progress ({})", sanitize(exc, 200))

    async def send(self, runs: Iterable[Run]) -> int:
        """Send the latest unsent value of each of these runs (one round trip); returns how
        many were sent. Raises the broker's error (the values stay due)."""
        due: list[tuple[Run, int]] = []
        values: dict[str, list[tuple[Lease, str]]] = {}
        for run in runs:
            latest = run.progress_due()
            if latest is None:
                continue
            number, text = latest
            due.append((run, number))
            job = run.job
            values.setdefault(job.queue, []).append((Lease(job.id, job.token), text))
        if not due:
            return 0
        refused = await self.broker.set_progress(values)
        self.refused += len(refused)
        for run, number in due:
            run.progress_sent = max(run.progress_sent, number)
        return len(due)

    async def flush(self, runs: Iterable[Run]) -> None:
        """The last values before these runs' outcomes go out; an error only loses them."""
        try:
            await self.send(runs)
        except (RedisError, OSError) as exc:
            logger.warning("could not send the last progress ({})", sanitize(exc, 200))
