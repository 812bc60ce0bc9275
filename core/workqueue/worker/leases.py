"""Keeping leases: renew every lease this process holds at a fixed rate of lease/4.

Held are the leases of running attempts and of outcomes not yet applied (under a slow or
broken link an outcome may wait longer than its lease has left). A run superseded by a
newer run of the same job in this process (the broker handed out a newer token, so the older
lease is gone) is not renewed but stopped at once. The broker answers the leases it found
gone, as ``(job id, token)``; each stops exactly that run (an ``async``
handler is cancelled, a plain ``def`` sees ``ctx.cancelled``) and its outcome is dropped. A
newer run of the same job in this process, under a newer token, is not touched.

The broker also answers the leases whose job was asked to cancel (``POST /jobs/{id}/cancel``):
each such run is stopped the same way and reported ``cancel``, so the job ends cancelled. The
rate is lease/4, not lease/3, so a cancel requested just after a renewal still ends the job
within a third of the lease (the next renewal, plus one finish round trip).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from loguru import logger
from redis.exceptions import RedisError

from workqueue.broker.contract import BrokerAPI, Lease
from workqueue.log import sanitize
from workqueue.worker.runs import Run, RunKey, StopReason
from workqueue.worker.stats import WorkerStats

__all__ = ["LeaseKeeper", "held_leases"]


def held_leases(runs: Iterable[Run]) -> tuple[dict[str, list[Lease]], list[Run]]:
    """The leases of these runs, per queue, and the runs superseded by a newer run of the
    same job in this process (a newer token was handed out, so their lease is gone: they are
    not renewed but stopped). Runs already stopped as lost are left out."""
    newest: dict[tuple[str, str], Run] = {}
    superseded: list[Run] = []
    for run in runs:
        if run.stopped == "lost":
            continue
        job = run.job
        other = newest.setdefault((job.queue, job.id), run)
        if other is not run:
            older, newer = sorted((other, run), key=_token_order)
            newest[(job.queue, job.id)] = newer
            superseded.append(older)
    leases: dict[str, list[Lease]] = {}
    for (queue, job_id), run in newest.items():
        queue_leases = leases.get(queue)
        if queue_leases is None:
            queue_leases = leases[queue] = []
        queue_leases.append(Lease(job_id, run.job.token))
    return leases, superseded


def _token_order(run: Run) -> int:
    try:
        return int(run.job.token)
    except ValueError:
        return -1


class LeaseKeeper:
    """Renews held leases every lease/4 and stops the runs whose lease is gone or whose job
    was asked to cancel."""

    def __init__(
        self,
        broker: BrokerAPI,
        lease_seconds: float,
        held: Callable[[], Iterable[Run]],
        stop_run: Callable[[RunKey, StopReason], Run | None],
        stats: WorkerStats,
    ) -> None:
        self.broker = broker
        self.lease_ms = int(lease_seconds * 1000)
        self.interval = max(0.2, lease_seconds / 4)
        self._held = held
        self._stop_run = stop_run
        self._stats = stats

    async def loop(self) -> None:
        """Renew until cancelled, at a fixed rate: a slow round trip does not stretch the
        period past lease/4."""
        next_at = time.monotonic() + self.interval
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at + self.interval, time.monotonic())
            try:
                await self.renew_once()
            except (RedisError, OSError) as exc:
                logger.warning("could not renew leases ({})", sanitize(exc, 200))

    async def renew_once(self) -> int:
        """One renewal of every held lease; returns how many runs were stopped as lost (runs
        of jobs asked to cancel are stopped too, not counted here)."""
        leases, superseded = held_leases(self._held())
        stopped = 0
        for run in superseded:
            if self._stop_run(run.key, "lost") is not None:
                stopped += 1
                self._stats.lost += 1
        if not leases:
            return stopped
        renewed = await self.broker.renew(leases, lease_ms=self.lease_ms)
        for gone in renewed.lost.values():
            for lease in gone:
                if self._stop_run((lease.job_id, lease.token), "lost") is not None:
                    stopped += 1
                    self._stats.lost += 1
        for asked in renewed.cancel.values():
            for lease in asked:
                self._stop_run((lease.job_id, lease.token), "cancel")
        return stopped
