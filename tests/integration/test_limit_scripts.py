"""The limit scripts (limit_acquire, limit_release, limit_renew, limit_flush) and the queue-side
steps (defer, limit_wake), driven directly against the real Redis."""

from __future__ import annotations

import asyncio
import itertools
import uuid

from workqueue.broker import Broker
from workqueue.broker.contract import Applied, FinishOp, OpKind
from workqueue.broker.limits import LimitStore, holder_member
from workqueue.job import NewJob
from workqueue.limits import LimitSpec, Rate

W = "test-worker"


def new_job(queue: str = "q1", **kw: object) -> NewJob:
    fields: dict[str, object] = {
        "id": uuid.uuid4().hex,
        "type": "t",
        "queue": queue,
        "payload": b"{}",
        "retries": 2,
        "timeout": 10.0,
    }
    fields.update(kw)
    return NewJob(**fields)  # type: ignore[arg-type]


async def active_job(broker: Broker, **kw: object) -> tuple[str, str]:
    """A job reserved (active) in q1: its id and token (reserve writes no history entry for
    the running attempt: control.lua)."""
    job = new_job(**kw)
    await broker.enqueue([job])
    res = await broker.reserve("q1", 1, lease_ms=5000, worker_id=W, request_id=uuid.uuid4().hex)
    (got,) = res.jobs
    return job.id, got.token


async def test_a_held_back_job_goes_back_as_never_started(broker: Broker) -> None:
    # Given an active job
    store = LimitStore(broker)
    job_id, token = await active_job(broker)
    k = broker.keys("q1")
    now = await broker.server_time_ms()

    # When it is deferred under a wrong token, then under its own
    assert await store.defer({"q1": [(job_id, "999", now + 5000)]}) == {"q1": [0]}
    assert await broker.redis.hget(k.job(job_id), "status") == b"active"
    assert await store.defer({"q1": [(job_id, token, now + 5000)]}) == {"q1": [1]}

    # Then its lease is gone, the attempt does not count, and it waits until the given time
    rec = await broker.redis.hgetall(k.job(job_id))
    assert rec[b"status"] == b"scheduled" and rec[b"attempts"] == b"0"
    assert int(rec[b"run_at"]) == now + 5000 and b"history" not in rec
    assert b"started_at" not in rec and b"worker" not in rec  # it never ran
    assert await broker.redis.zscore(k.scheduled, job_id) == now + 5000
    assert await broker.redis.zscore(k.active, job_id) is None
    assert not await broker.redis.hexists(k.leases, job_id)
    assert int(await broker.redis.hget(k.stats, "deferred")) == 1
    # and a late report of that lease is refused
    verdict = await broker.finish({"q1": [FinishOp(OpKind.ACK, job_id, token, b"1")]})
    assert verdict == {"q1": [Applied.STALE]}


async def test_a_wake_that_comes_before_the_defer_makes_the_job_due_at_once(
    broker: Broker,
) -> None:
    # Given an active job that a release wakes before its worker deferred it
    store = LimitStore(broker)
    job_id, token = await active_job(broker)
    assert await store.wake([("q1", job_id)]) == 0

    # When the defer comes with a time far away
    now = await broker.server_time_ms()
    await store.defer({"q1": [(job_id, token, now + 3_600_000)]})

    # Then it is due now, not in an hour
    score = await broker.redis.zscore(broker.keys("q1").scheduled, job_id)
    assert score is not None and score < now + 1000
    # and a waiting job woken later is made due at once too
    other, token2 = await active_job(broker)
    await store.defer({"q1": [(other, token2, now + 3_600_000)]})
    assert await store.wake([("q1", other)]) == 1
    assert await broker.redis.zscore(broker.keys("q1").scheduled, other) < now + 1000


async def test_concurrency_admits_up_to_the_limit_and_a_release_wakes_the_first_waiter(
    broker: Broker,
) -> None:
    store = LimitStore(broker)
    spec = LimitSpec(None, 2)
    jobs = [("q1", f"j{i}", "1") for i in range(4)]

    # Given 4 jobs asking for a limit of 2
    ((now, verdicts),) = await store.acquire([("b1", spec, jobs)], 5000)

    # Then 2 are admitted and 2 are told to come back when a holder's lease could expire
    assert verdicts[:2] == [1, 1]
    assert all(at > now + 5000 for at in verdicts[2:])
    assert verdicts[3] >= verdicts[2]

    # When one holder is released, the first waiter is named for waking
    ((at, woken),) = await store.release([("b1", spec, [holder_member("q1", "j0", "1")])])
    assert woken == [("q1", "j2")] and at >= now
    # and a repeated acquire of a holder is admitted again (a lost reply)
    ((_, again),) = await store.acquire([("b1", spec, [jobs[1]])], 5000)
    assert again == [1]


async def test_a_holder_that_is_not_renewed_frees_its_slot_when_its_deadline_passes(
    broker: Broker,
) -> None:
    store = LimitStore(broker)
    spec = LimitSpec(None, 1)
    # Given a holder with a 100 ms lease (its slot deadline is lease + 1 s) and one renewed
    ((_, first),) = await store.acquire([("b2", spec, [("q1", "a", "1")])], 100)
    ((_, second),) = await store.acquire([("b2", spec, [("q1", "b", "1")])], 100)
    assert first == [1] and second[0] != 1
    # When its deadline passes without renewal
    await asyncio.sleep(1.3)
    # Then the next job gets the slot
    ((_, third),) = await store.acquire([("b2", spec, [("q1", "b", "1")])], 100)
    assert third == [1]
    # and a renewed holder keeps it
    await store.renew([("b2", [holder_member("q1", "b", "1")])], 5000)
    await asyncio.sleep(1.3)
    ((_, fourth),) = await store.acquire([("b2", spec, [("q1", "c", "1")])], 100)
    assert fourth[0] != 1


async def test_a_rate_admits_a_burst_of_one_period_then_spaces_the_waiters(
    broker: Broker,
) -> None:
    store = LimitStore(broker)
    spec = LimitSpec(Rate(5, 1000), None)
    jobs = [("q1", f"r{i}", "1") for i in range(8)]
    # Given 8 jobs asking at once for 5 a second
    ((now, verdicts),) = await store.acquire([("b3", spec, jobs)], 5000)
    # Then 5 start, and the 3 others come back one permit interval (200 ms) apart
    assert verdicts[:5] == [1] * 5
    waits = verdicts[5:]
    assert now + 150 <= waits[0] <= now + 250
    assert [b - a for a, b in itertools.pairwise(waits)] == [200, 200]


async def test_a_change_of_limits_flushes_the_waiters_once(broker: Broker) -> None:
    store = LimitStore(broker)
    old = LimitSpec(Rate(1, 60_000), None)
    await store.flush("b4", old)
    jobs = [("q1", f"f{i}", "1") for i in range(3)]
    ((_, verdicts),) = await store.acquire([("b4", old, jobs)], 5000)
    assert verdicts[0] == 1 and verdicts[1] != 1
    # When the limits change, the first flush names every waiter, a second one nothing
    new = LimitSpec(Rate(100, 1000), None)
    assert sorted(await store.flush("b4", new)) == [("q1", "f1"), ("q1", "f2")]
    assert await store.flush("b4", new) == []
    # and the new rate starts from a full bucket
    ((_, after),) = await store.acquire([("b4", new, jobs[1:])], 5000)
    assert after == [1, 1]


async def test_with_a_rate_too_a_release_wakes_a_waiter_for_the_next_permit(
    broker: Broker,
) -> None:
    store = LimitStore(broker)
    spec = LimitSpec(Rate(1, 60_000), 1)
    # Given a job holding the only slot and the minute's only permit, and one waiting
    ((now, verdicts),) = await store.acquire(
        [("b5", spec, [("q1", "a", "1"), ("q1", "b", "1")])], 5000
    )
    assert verdicts[0] == 1 and verdicts[1] >= now + 59_000
    # When the holder ends, the waiter is woken for the next permit, not now
    ((at, woken),) = await store.release([("b5", spec, [holder_member("q1", "a", "1")])])
    assert woken == [("q1", "b")]
    assert now + 59_000 <= at <= now + 61_000


async def test_a_held_back_job_asked_to_cancel_ends_cancelled(broker: Broker) -> None:
    # Given an active job asked to cancel (cancel.lua marks an active record)
    store = LimitStore(broker)
    job_id, token = await active_job(broker)
    k = broker.keys("q1")
    await broker.redis.hset(k.job(job_id), "cancel", "1")
    # When its limit holds it back
    now = await broker.server_time_ms()
    assert await store.defer({"q1": [(job_id, token, now + 5000)]}) == {"q1": [2]}
    # Then it ends cancelled (it never ran) instead of waiting
    rec = await broker.redis.hgetall(k.job(job_id))
    assert rec[b"status"] == b"cancelled" and rec[b"attempts"] == b"0"
    assert await broker.redis.zscore(k.cancelled, job_id) is not None
    assert await broker.redis.zscore(k.scheduled, job_id) is None
