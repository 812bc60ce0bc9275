"""A run: one attempt of one job in this process, keyed by ``(job id, fencing token)``.

The same job can have two runs in one process: when its lease expired while run T1 went on
(the link to Redis was down longer than the lease, or a handler blocked the loop) and the
job was leased again to this worker as T2. The key keeps them apart, so ending, renewing or
cancelling T1 never touches T2.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Literal

from workqueue.job import ReservedJob
from workqueue.jobtypes import CancelFlag
from workqueue.worker.execution import Outcome

__all__ = ["Deadlines", "Run", "RunKey", "StopReason"]

RunKey = tuple[str, str]
#: why a run was told to stop: its timeout passed, its lease was lost (handed on: its outcome
#: is dropped), a graceful stop hands the job back, or the job was cancelled (renew said so:
#: the job ends cancelled)
StopReason = Literal["timeout", "lost", "release", "cancel"]

# set_progress may be called from handler threads: a value and its number change together
_PROGRESS_LOCK = threading.Lock()


class Run(CancelFlag):
    """One attempt in this process. It is its own ``ctx.cancelled`` flag (one object per job).

    ``thread`` is set while a plain ``def`` handler's thread runs on after its attempt ended
    (timed out, lease lost, released): the run keeps its slot until that thread returns.
    """

    __slots__ = (
        "duration_s",
        "error",
        "job",
        "key",
        "outcome",
        "progress",
        "progress_sent",
        "stopped",
        "task",
        "thread",
    )

    def __init__(self, job: ReservedJob) -> None:
        self._cancelled = False
        self.job = job
        self.key: RunKey = (job.id, job.token)
        self.task: asyncio.Task[None] | None = None
        self.thread: Future[Any] | None = None
        self.stopped: StopReason | None = None
        self.outcome: Outcome | None = None
        self.duration_s = 0.0
        self.error: str | None = None
        #: the latest progress reported, numbered (0: none yet), and the number last sent
        self.progress: tuple[int, str] = (0, "")
        self.progress_sent = 0

    def report_progress(self, encoded: str) -> None:
        """Keep the latest checked progress value (any thread); ``ProgressSender`` sends it."""
        with _PROGRESS_LOCK:
            self.progress = (self.progress[0] + 1, encoded)

    def progress_due(self) -> tuple[int, str] | None:
        """The latest progress value when it has not been sent yet, with its number."""
        latest = self.progress
        return latest if latest[0] > self.progress_sent else None

    def stop(self, reason: StopReason) -> bool:
        """Tell the run to stop (first reason wins): set the flag, cancel its task.
        Returns False when it had already been told, or has ended."""
        if self.stopped is not None:
            return False
        task = self.task
        if task is None or task.done():
            return False
        self.stopped = reason
        self._cancelled = True
        task.cancel()
        return True

    @property
    def running(self) -> bool:
        """True while its attempt goes on (a hung thread's attempt has ended)."""
        task = self.task
        return task is not None and not task.done()


class Deadlines:
    """Attempt timeouts: one loop timer for the earliest deadline, not one timer per job.

    Entries of runs that ended are dropped lazily (when they reach the top, or when the heap
    grows well past the number of runs).
    """

    __slots__ = ("_at", "_heap", "_on_expiry", "_seq", "_timer")

    def __init__(self, on_expiry: Callable[[Run], None]) -> None:
        self._heap: list[tuple[float, int, Run]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._at = 0.0
        self._on_expiry = on_expiry

    def arm(self, run: Run, timeout: float, live_runs: int) -> None:
        """Call ``on_expiry(run)`` ``timeout`` seconds from now unless the run ended."""
        loop = asyncio.get_running_loop()
        when = loop.time() + timeout
        heap = self._heap
        heapq.heappush(heap, (when, next(self._seq), run))
        if self._timer is None or when < self._at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(when, self._fire)
            self._at = when
        if len(heap) > 2 * live_runs + 1024:
            self._heap = [entry for entry in heap if entry[2].running]
            heapq.heapify(self._heap)

    def _fire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        heap = self._heap
        while heap and (heap[0][0] <= now or not heap[0][2].running):
            _when, _seq, run = heapq.heappop(heap)
            if run.running:
                self._on_expiry(run)
        if heap:
            self._at = heap[0][0]
            self._timer = loop.call_at(self._at, self._fire)
        else:
            self._timer = None

    def close(self) -> None:
        """Cancel the timer (the worker is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
