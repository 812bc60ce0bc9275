"""Job control in the worker, without Redis: progress values, coalescing, cancel stops."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence

import pytest

from workqueue.broker.contract import Lease
from workqueue.job import ReservedJob
from workqueue.jobtypes import JobContext, encode_progress
from workqueue.worker.progress import ProgressSender
from workqueue.worker.runs import Run


def _job(job_id: str = "j", token: str = "7") -> ReservedJob:
    return ReservedJob(job_id, "q", token, "t", b"{}", 1, 0, 30.0, 0, 0, 0)


def test_progress_values_are_checked() -> None:
    assert encode_progress(0.5) == "0.5"
    assert encode_progress(12) == "12"
    assert encode_progress({"a": [1, 2]}) == '{"a":[1,2]}'
    for bad in (float("nan"), float("inf"), {"x": float("nan")}):
        with pytest.raises(ValueError, match="finite"):
            encode_progress(bad)
    for bad in ("text", [1], True, None):
        with pytest.raises(ValueError, match="a number or a JSON object"):
            encode_progress(bad)
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        encode_progress({"x": object()})
    with pytest.raises(ValueError, match="over 4096 bytes"):
        encode_progress({"x": "y" * 5000})


class _Broker:
    def __init__(self) -> None:
        self.sent: list[dict[str, list[tuple[Lease, str]]]] = []

    async def set_progress(self, values: Mapping[str, Sequence[tuple[Lease, str]]]) -> list[str]:
        self.sent.append({q: list(v) for q, v in values.items()})
        return []


async def test_a_tight_loop_of_progress_is_coalesced_to_the_latest_value() -> None:
    # Given a run whose handler reports 10,000 values from two threads
    run = Run(_job())
    ctx = JobContext("j", "t", "q", 1, 0, None, "w", 30.0, None, 7, run)  # type: ignore[arg-type]

    def report(start: int) -> None:
        for i in range(start, start + 5000):
            ctx.set_progress(i)

    threads = [threading.Thread(target=report, args=(n,)) for n in (0, 5000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ctx.set_progress({"done": True})
    # When the sender runs twice
    broker = _Broker()
    sender = ProgressSender(broker, lambda: [run])  # type: ignore[arg-type]
    assert await sender.send([run]) == 1
    assert await sender.send([run]) == 0
    # Then one value went out: the latest, under the run's lease
    assert broker.sent == [{"q": [(Lease("j", "7"), '{"done":true}')]}]
    assert run.progress[0] == 10_001


async def test_a_cancel_stop_reports_the_cancel_outcome() -> None:
    from workqueue import JobType
    from workqueue.registry import Registry
    from workqueue.settings import WorkerSettings
    from workqueue.worker.events import JobLog, Observers
    from workqueue.worker.executing import CANCEL, Executor

    started = asyncio.Event()

    async def handler(payload: object, ctx: JobContext) -> str:
        started.set()
        await asyncio.sleep(60)
        return "never"

    registry = Registry.from_job_types([JobType(name="t", handler=handler)])
    settled: list[Run] = []
    log = JobLog()
    settings = WorkerSettings(worker_id="w1")
    executor = Executor(settings, registry, log, Observers(None, "w1", log), settled.append)
    run = executor.start(_job())
    await started.wait()
    assert executor.stop_run(run.key, "cancel") is run
    await asyncio.sleep(0.05)
    assert settled == [run] and run.outcome == CANCEL and run.is_set()
    executor.close()
