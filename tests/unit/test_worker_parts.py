"""The worker's parts on their own, against a fake broker (no Redis)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from workqueue.broker.contract import (
    Applied,
    FinishOp,
    HousekeepResult,
    Lease,
    OpKind,
    RenewResult,
    ReserveResult,
)
from workqueue.job import ReservedJob
from workqueue.jobtypes import JobContext, JobType
from workqueue.registry import Registry
from workqueue.settings import WorkerSettings
from workqueue.worker.events import JobLog, Observers
from workqueue.worker.executing import Executor
from workqueue.worker.fetching import Fetcher
from workqueue.worker.housekeeping import MORE_SECONDS, Housekeeper, next_step_in
from workqueue.worker.leases import LeaseKeeper, held_leases
from workqueue.worker.metrics import RunTimeHistogram
from workqueue.worker.runs import Run
from workqueue.worker.settling import Settler
from workqueue.worker.stats import WorkerStats


def job(job_id: str = "j1", token: str = "1", *, type: str = "t", queue: str = "q") -> ReservedJob:
    return ReservedJob(job_id, queue, token, type, b"{}", 1, 0, 0.0, 0, 0, 0)


class FakeBroker:
    """Records calls; ``reserve`` answers from per-queue lists of jobs."""

    def __init__(self) -> None:
        self.queued: dict[str, list[ReservedJob]] = {}
        self.reserve_calls: list[tuple[str, str]] = []
        self.fail_reply_once: set[str] = set()
        self.leased_by_request: dict[tuple[str, str], list[ReservedJob]] = {}
        self.finished: list[dict[str, list[FinishOp]]] = []
        self.lost: set[tuple[str, str]] = set()
        self.cancel: set[tuple[str, str]] = set()
        self.renewed: list[dict[str, list[Lease]]] = []
        self.housekept: list[str] = []
        self.finish_errors = 0

    async def reserve(
        self, queue: str, count: int, *, lease_ms: int, worker_id: str, request_id: str
    ) -> ReserveResult:
        self.reserve_calls.append((queue, request_id))
        replay = self.leased_by_request.get((queue, request_id))
        if replay is not None:
            return ReserveResult(queue, 0, None, list(replay), replayed=True)
        jobs = self.queued.get(queue, [])[:count]
        del self.queued.get(queue, [])[:count]
        self.leased_by_request[(queue, request_id)] = jobs
        if queue in self.fail_reply_once:
            self.fail_reply_once.discard(queue)
            raise RedisConnectionError("reply lost")  # the script ran; the reply did not come
        return ReserveResult(queue, 0, None, jobs)

    async def finish(self, ops: Mapping[str, Sequence[FinishOp]]) -> dict[str, list[Applied]]:
        if self.finish_errors:
            self.finish_errors -= 1
            raise RedisConnectionError("down")
        self.finished.append({q: list(v) for q, v in ops.items()})
        verdict = {
            OpKind.ACK: Applied.COMPLETED,
            OpKind.RELEASE: Applied.RELEASED,
            OpKind.CANCEL: Applied.CANCELLED,
        }
        return {
            q: [
                verdict.get(op.op, Applied.RETRYING if op.delay_ms >= 0 else Applied.FAILED)
                for op in v
            ]
            for q, v in ops.items()
        }

    async def renew(self, leases: Mapping[str, Sequence[Lease]], *, lease_ms: int) -> RenewResult:
        self.renewed.append({q: list(v) for q, v in leases.items()})
        return RenewResult(
            lost={
                q: [lease for lease in v if (lease.job_id, lease.token) in self.lost]
                for q, v in leases.items()
            },
            cancel={
                q: [lease for lease in v if (lease.job_id, lease.token) in self.cancel]
                for q, v in leases.items()
            },
        )

    async def wait_for_work(self, queues: Sequence[str], timeout_s: float) -> bool:
        await asyncio.sleep(min(timeout_s, 0.01))
        return False

    async def housekeep(self, queue: str, *, worker_id: str, duty_ms: int) -> HousekeepResult:
        self.housekept.append(queue)
        return HousekeepResult(queue, held=True, now_ms=1000, next_ms=1050)


def make_executor(
    handlers: dict[str, Any], settled: list[Run], concurrency: int = 4, **types: Any
) -> Executor:
    registry = Registry.from_job_types(
        [JobType(name=name, handler=h, **types.get(name, {})) for name, h in handlers.items()]
    )
    settings = WorkerSettings(concurrency=concurrency, worker_id="w1")
    log = JobLog()
    return Executor(settings, registry, log, Observers(None, "w1", log), settled.append)


# -- fetching (defect 3: one request id per queue) --------------------------------------------


async def test_a_lost_reserve_reply_is_replayed_on_its_own_queue() -> None:
    broker = FakeBroker()
    broker.queued = {"q1": [], "q2": [job("a", queue="q2"), job("b", queue="q2")]}
    broker.fail_reply_once = {"q2"}
    started: list[ReservedJob] = []
    settings = WorkerSettings(queues=("q1", "q2"), worker_id="w1")
    fetcher = Fetcher(broker, settings, JobLog(), WorkerStats(), started.append)  # type: ignore[arg-type]
    with pytest.raises(RedisConnectionError):
        await fetcher.reserve(10)
    q2_id = broker.reserve_calls[-1][1]
    got, _wait = await fetcher.reserve(10)
    # queue 1's next call used its own id; queue 2's retry carried the id of the lost call
    assert broker.reserve_calls[2][0] == "q1" and broker.reserve_calls[2][1] != q2_id
    assert broker.reserve_calls[3] == ("q2", q2_id)
    assert got == 2 and [j.id for j in started] == ["a", "b"]
    # and only after that success is queue 2's id renewed
    assert fetcher.request_ids["q2"] != q2_id


# -- executing: runs keyed by (id, token) -----------------------------------------------------


async def test_two_runs_of_one_job_are_kept_apart() -> None:
    settled: list[Run] = []
    release = asyncio.Event()

    async def handler(payload: Any, ctx: JobContext) -> int:
        await release.wait()
        return ctx.token

    ex = make_executor({"t": handler}, settled)
    t1 = ex.start(job("x", "7"))
    t2 = ex.start(job("x", "9"))
    await asyncio.sleep(0.01)
    assert set(ex.runs) == {("x", "7"), ("x", "9")}
    # the lease of T1 is lost: exactly T1 stops, T2 goes on
    assert ex.stop_run(("x", "7"), "lost") is t1
    await asyncio.sleep(0.01)
    assert t1.is_set() and not t2.is_set() and set(ex.runs) == {("x", "9")}
    release.set()
    await asyncio.sleep(0.01)
    assert settled == [t2] and t2.outcome is not None and t2.outcome.data == b"9"
    assert not ex.runs and ex.free == 4


async def test_async_timeout_fails_the_attempt_and_frees_the_slot() -> None:
    settled: list[Run] = []

    async def handler(payload: Any, ctx: JobContext) -> None:
        await asyncio.sleep(30)

    ex = make_executor({"t": handler}, settled, t={"timeout": 0.05})
    run = ex.start(job())
    await asyncio.sleep(0.2)
    assert settled == [run] and run.outcome is not None and run.outcome.kind == "fail"
    assert run.outcome.data == "timed out after 0.05s" and run.is_set() and ex.free == 4


async def test_a_hung_thread_keeps_its_slot_until_it_returns() -> None:
    settled: list[Run] = []
    go = threading.Event()
    seen: list[bool] = []
    hung_counts: list[int] = []

    def handler(payload: Any, ctx: JobContext) -> None:
        go.wait(5)
        seen.append(bool(ctx.cancelled))

    ex = make_executor({"t": handler}, settled, concurrency=2, t={"timeout": 0.05})
    ex._on_hung = hung_counts.append
    run = ex.start(job())
    await asyncio.sleep(0.3)
    # reported failed (timed out) at once, ctx.cancelled set, but the slot stays taken
    assert settled == [run] and run.outcome is not None and run.outcome.kind == "fail"
    assert run.is_set() and ex.hung == 1 and ex.free == 1 and hung_counts == [1]
    assert ex.running() == []
    go.set()
    for _ in range(100):
        if ex.free == 2:
            break
        await asyncio.sleep(0.01)
    assert ex.free == 2 and ex.hung == 0 and seen == [True] and len(settled) == 1


async def test_a_quick_job_is_not_queued_behind_a_hung_thread() -> None:
    settled: list[Run] = []
    go = threading.Event()

    def slow(payload: Any, ctx: JobContext) -> None:
        go.wait(5)

    def quick(payload: Any, ctx: JobContext) -> str:
        return "done"

    ex = make_executor(
        {"slow": slow, "quick": quick}, settled, concurrency=2, slow={"timeout": 0.05}
    )
    ex.start(job("h", type="slow"))
    await asyncio.sleep(0.2)
    assert ex.free == 1
    q = ex.start(job("q", type="quick"))  # the free slot has a free pool thread
    await asyncio.sleep(0.1)
    assert q.outcome is not None and q.outcome.kind == "ack"
    go.set()


async def test_release_of_an_async_run() -> None:
    settled: list[Run] = []

    async def handler(payload: Any, ctx: JobContext) -> None:
        await asyncio.sleep(30)

    ex = make_executor({"t": handler}, settled)
    run = ex.start(job())
    await asyncio.sleep(0.01)
    run.stop("release")
    await asyncio.sleep(0.01)
    assert settled == [run] and run.outcome is not None and run.outcome.kind == "release"


async def test_isolated_cpu_spin_is_killed_at_its_timeout(installed_test_plugin: None) -> None:
    from wq_testplugin_good import isolated_add, spin

    settled: list[Run] = []
    ex = make_executor(
        {"spin": spin, "add": isolated_add},
        settled,
        concurrency=1,
        spin={"timeout": 1.0, "isolation": "process"},
        add={"isolation": "process"},
    )
    started = time.monotonic()
    run = ex.start(job("s", type="spin"))
    while ex.free == 0 and time.monotonic() - started < 10:
        await asyncio.sleep(0.02)
    freed_after = time.monotonic() - started
    assert run.outcome is not None and run.outcome.data == "timed out after 1s"
    assert 1.0 <= freed_after < 2.0  # the child was killed at its timeout: the slot is free
    add = ex.start(ReservedJob("a", "q", "1", "add", b'{"a": 2, "b": 3}', 1, 0, 0.0, 0, 0, 0))
    await asyncio.wait_for(asyncio.shield(add.task), 10)  # type: ignore[arg-type]
    assert add.outcome is not None and add.outcome.kind == "ack"
    assert b'"sum":5' in bytes(add.outcome.data)  # type: ignore[arg-type]


async def test_an_isolated_error_keeps_its_type_name(installed_test_plugin: None) -> None:
    from wq_testplugin_good import isolated_fail

    settled: list[Run] = []
    ex = make_executor({"f": isolated_fail}, settled, f={"isolation": "process"})
    run = ex.start(job(type="f"))
    await asyncio.wait_for(asyncio.shield(run.task), 10)  # type: ignore[arg-type]
    assert run.outcome is not None and run.outcome.data == "ValueError: isolated failure"


# -- keeping leases ---------------------------------------------------------------------------


async def test_a_lost_lease_stops_exactly_that_run() -> None:
    settled: list[Run] = []
    release = asyncio.Event()

    async def handler(payload: Any, ctx: JobContext) -> str:
        await release.wait()
        return "ok"

    ex = make_executor({"t": handler}, settled)
    old = ex.start(job("x", "1"))
    new = ex.start(job("x", "2"))
    broker = FakeBroker()
    broker.lost = {("x", "1")}
    stats = WorkerStats()
    keeper = LeaseKeeper(broker, 3.0, ex.running, ex.stop_run, stats)  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    assert await keeper.renew_once() == 1
    await asyncio.sleep(0.01)
    assert old.is_set() and not new.is_set() and stats.lost == 1
    # the next renewal no longer carries the lost lease
    await keeper.renew_once()
    assert broker.renewed[-1] == {"q": [Lease("x", "2")]}
    release.set()
    await asyncio.sleep(0.01)
    assert settled == [new]


def test_held_leases_leave_out_lost_runs() -> None:
    a, b = Run(job("a", "1")), Run(job("b", "2", queue="other"))
    b.stopped = "lost"
    assert held_leases([a, b]) == ({"q": [Lease("a", "1")]}, [])


def test_a_newer_run_of_the_same_job_supersedes_the_older() -> None:
    old, new, other = Run(job("x", "9")), Run(job("x", "10")), Run(job("y", "3"))
    leases, superseded = held_leases([new, other, old])
    assert leases == {"q": [Lease("x", "10"), Lease("y", "3")]} and superseded == [old]


# -- settling -----------------------------------------------------------------------------------


async def test_outcomes_are_settled_in_one_batch_and_retried_after_an_error() -> None:
    from workqueue.worker.execution import Outcome

    broker = FakeBroker()
    broker.finish_errors = 1
    log = JobLog()
    stats = WorkerStats()
    settler = Settler(
        broker,  # type: ignore[arg-type]
        stats,
        RunTimeHistogram(),
        log,
        Observers(None, "w1", log),
        lease_seconds=1.0,
    )
    runs = []
    for n, outcome in enumerate(
        [Outcome("ack", b"1"), Outcome("fail", "boom", 100), Outcome("fail", "bad", -1)]
    ):
        run = Run(job(f"j{n}"))
        run.outcome = outcome
        settler.add(run)
        runs.append(run)
    assert list(settler.held()) == runs
    await settler.flush()
    assert len(broker.finished) == 1 and len(broker.finished[0]["q"]) == 3
    assert (stats.succeeded, stats.retried, stats.failed) == (1, 1, 1)
    assert list(settler.held()) == []


# -- housekeeping --------------------------------------------------------------------------------


def test_housekeeping_schedule() -> None:
    held = HousekeepResult("q", held=True, now_ms=1000, next_ms=1400)
    assert next_step_in(held, 5.0) == pytest.approx(0.4)
    assert next_step_in(HousekeepResult("q", held=True, now_ms=1000, next_ms=99_000), 5.0) == 5
    assert next_step_in(HousekeepResult("q", held=True, now_ms=1000), 5.0) == 5.0
    assert next_step_in(HousekeepResult("q", held=True, more=True), 5.0) == MORE_SECONDS
    assert next_step_in(HousekeepResult("q", held=False), 5.0) == 5.0
    assert next_step_in(HousekeepResult("q", held=False), 5.0, 0.5) == 0.5
    # nothing waiting at all: the longer idle pause (no lease can expire sooner)
    assert next_step_in(HousekeepResult("q", held=True, now_ms=1000), 5.0, 1.0, 7.5) == 7.5
    # a quiet step with a far deadline (kept records trimmed tomorrow): the idle pause too...
    far = HousekeepResult("q", held=True, now_ms=1000, next_ms=86_400_000)
    assert next_step_in(far, 5.0, 1.0, 7.5) == 7.5
    # ...but never past the earliest deadline it saw
    near = HousekeepResult("q", held=True, now_ms=1000, next_ms=3_000)
    assert next_step_in(near, 5.0, 1.0, 7.5) == pytest.approx(2.0)
    # a step that did something keeps the interval
    busy = HousekeepResult("q", held=True, now_ms=1000, next_ms=86_400_000, trimmed=3)
    assert next_step_in(busy, 5.0, 1.0, 7.5) == 5.0


async def test_housekeeping_runs_for_every_queue_regardless_of_slots() -> None:
    broker = FakeBroker()
    keeper = Housekeeper(
        broker,  # type: ignore[arg-type]
        ("a", "b"),
        "w1",
        housekeep_seconds=5.0,
        lease_seconds=30.0,
        stats=WorkerStats(),
    )
    assert keeper.interval == 5.0 and keeper.duty_ms == 15_000
    assert keeper.retry == 3.75 and keeper.idle == 13.5
    task = asyncio.create_task(keeper.loop())
    await asyncio.sleep(0.2)
    task.cancel()
    # each queue stepped again after ~50 ms (next_ms - now_ms), not after the interval
    assert broker.housekept.count("a") >= 2 and broker.housekept.count("b") >= 2
