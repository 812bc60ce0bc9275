"""The job state machine's scripts, driven directly against the real Redis.

Given/When/Then in each test; leases are a few hundred milliseconds so expiry is quick.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from workqueue.broker import Broker, BrokerConfig
from workqueue.broker.contract import FinishOp, Lease, OpKind, ReserveResult, WorkerAdvert
from workqueue.job import NewJob

W = "test-worker"
ACK, FAIL, RELEASE = OpKind.ACK, OpKind.FAIL, OpKind.RELEASE


async def reserve(
    broker: Broker, queue: str, count: int, lease_ms: int, worker: str = W
) -> ReserveResult:
    return await broker.reserve(
        queue, count, lease_ms=lease_ms, worker_id=worker, request_id=uuid.uuid4().hex
    )


async def housekeep(broker: Broker, queue: str = "q1", worker: str = W) -> list[str]:
    """One housekeeping step; the outcomes of the leases it recovered."""
    result = await broker.housekeep(queue, worker_id=worker, duty_ms=5000)
    assert result.held
    return [r.outcome for r in result.recovered]


def new_job(queue: str = "q1", **kw: object) -> NewJob:
    fields: dict[str, object] = {
        "id": uuid.uuid4().hex,
        "type": "t",
        "queue": queue,
        "payload": b'{"x": 1}',
        "retries": 2,
        "timeout": 10.0,
    }
    fields.update(kw)
    return NewJob(**fields)  # type: ignore[arg-type]


async def stats(broker: Broker, queue: str = "q1") -> dict[str, int]:
    return await broker.queue_stats(queue)


async def test_enqueue_reserve_ack_counts_once(broker: Broker) -> None:
    # Given two queued jobs
    jobs = [new_job(), new_job()]
    results = await broker.enqueue(jobs)
    assert [r.status for r in results] == ["queued", "queued"]
    # When one reserve takes both and both are acked, twice (a retried round trip)
    res = await reserve(broker, "q1", 10, 5000, W)
    assert [j.id for j in res.jobs] == [j.id for j in jobs]
    assert all(j.attempt == 1 for j in res.jobs)
    ops = [FinishOp(ACK, j.id, j.token, b'"ok"') for j in res.jobs]
    first = await broker.finish({"q1": ops})
    again = await broker.finish({"q1": ops})
    # Then the repeat answers what the first applied, and nothing is counted twice
    assert first == {"q1": ["completed", "completed"]}
    assert again == {"q1": ["completed", "completed"]}
    s = await stats(broker)
    assert s["done"] == 2 and s["done|t"] == 2 and s["active"] == 0 and s["queued"] == 0
    info = await broker.get_job(jobs[0].id)
    assert info.status == "completed" and info.result == "ok" and info.attempts == 1


async def test_same_id_twice_is_one_job(broker: Broker) -> None:
    job = new_job()
    await broker.enqueue([job])
    (again,) = await broker.enqueue([job])
    assert again.duplicate is True and again.id == job.id
    assert (await stats(broker))["queued"] == 1


async def test_expired_lease_is_recovered_and_stale_ack_refused(broker: Broker) -> None:
    # Given a job reserved by worker A with a short lease
    job = new_job()
    await broker.enqueue([job])
    a = await reserve(broker, "q1", 1, 200, "A")
    (held,) = a.jobs
    # When the lease runs out, housekeeping recovers it and worker B reserves
    await asyncio.sleep(0.3)
    assert await housekeep(broker) == ["requeued"]
    b = await reserve(broker, "q1", 1, 5000, "B")
    # Then B gets the job with a new token, and A's late ack and renewal are refused
    (rerun,) = b.jobs
    assert rerun.id == job.id and rerun.token != held.token and rerun.attempt == 2
    assert rerun.lost == 1
    late = await broker.finish({"q1": [FinishOp(ACK, job.id, held.token, b'"late"')]})
    assert late == {"q1": ["stale"]}
    lost = (await broker.renew({"q1": [Lease(job.id, held.token)]}, lease_ms=5000)).lost
    assert lost == {"q1": [Lease(job.id, held.token)]}
    assert (await broker.renew({"q1": [Lease(job.id, rerun.token)]}, lease_ms=5000)).lost == {}
    done = await broker.finish({"q1": [FinishOp(ACK, job.id, rerun.token, b'"b"')]})
    assert done == {"q1": ["completed"]}
    s = await stats(broker)
    assert s["done"] == 1 and s["lost_leases"] == 1
    assert (await broker.get_job(job.id)).result == "b"


async def test_renewal_keeps_a_live_lease(broker: Broker) -> None:
    job = new_job()
    await broker.enqueue([job])
    a = await reserve(broker, "q1", 1, 300, "A")
    for _ in range(4):
        await asyncio.sleep(0.15)
        renewal = await broker.renew({"q1": [Lease(job.id, a.jobs[0].token)]}, lease_ms=300)
        assert renewal.lost == {}
    assert await housekeep(broker) == []
    b = await reserve(broker, "q1", 1, 300, "B")
    assert b.jobs == []


async def test_lost_lease_cap_fails_the_job(key_prefix: str, broker: Broker) -> None:
    capped = Broker(broker.redis, BrokerConfig(prefix=key_prefix, max_lost_leases=2))
    job = new_job()
    await capped.enqueue([job])
    outcomes = []
    for _ in range(3):
        await reserve(capped, "q1", 1, 100, "A")
        await asyncio.sleep(0.15)
        outcomes += await housekeep(capped)
    assert outcomes == ["requeued", "failed"]
    info = await capped.get_job(job.id)
    assert info.status == "failed" and "worker lost 2 times" in (info.error or "")
    s = await stats(capped)
    assert s["failed"] == 1 and s["active"] == 0 and s["queued"] == 0


async def test_fail_retries_then_fails_for_good(broker: Broker) -> None:
    job = new_job(retries=1)
    await broker.enqueue([job])
    r = await reserve(broker, "q1", 1, 5000, W)
    out = await broker.finish({"q1": [FinishOp(FAIL, job.id, r.jobs[0].token, "boom", 100)]})
    assert out == {"q1": ["retrying"]}
    assert (await broker.get_job(job.id)).status == "retrying"
    early = await reserve(broker, "q1", 1, 5000, W)
    assert early.jobs == [] and early.next_due_ms is not None
    await asyncio.sleep(0.15)
    r2 = await reserve(broker, "q1", 1, 5000, W)
    assert r2.jobs[0].attempt == 2 and r2.jobs[0].failures == 1
    out = await broker.finish({"q1": [FinishOp(FAIL, job.id, r2.jobs[0].token, "boom", 100)]})
    assert out == {"q1": ["failed"]}
    s = await stats(broker)
    assert s["failed"] == 1 and s["failed_attempts"] == 2 and s["retried"] == 1
    assert s["retrying"] == 0 and s["failed_kept"] == 1
    assert await broker.requeue_failed("q1", [job.id]) == [job.id]
    assert (await broker.get_job(job.id)).status == "queued"


async def test_permanent_fail_skips_retries(broker: Broker) -> None:
    job = new_job(retries=5)
    await broker.enqueue([job])
    r = await reserve(broker, "q1", 1, 5000, W)
    out = await broker.finish({"q1": [FinishOp(FAIL, job.id, r.jobs[0].token, "no", -1)]})
    assert out == {"q1": ["failed"]}


async def test_release_hands_back_without_a_failure(broker: Broker) -> None:
    job = new_job()
    await broker.enqueue([job])
    r = await reserve(broker, "q1", 1, 5000, W)
    out = await broker.finish({"q1": [FinishOp(RELEASE, job.id, r.jobs[0].token)]})
    assert out == {"q1": ["released"]}
    r2 = await reserve(broker, "q1", 1, 5000, W)
    assert r2.jobs[0].id == job.id and r2.jobs[0].failures == 0
    s = await stats(broker)
    assert s.get("failed_attempts", 0) == 0


async def test_delayed_job_waits_for_redis_time(broker: Broker) -> None:
    job = new_job(delay_ms=300)
    (res,) = await broker.enqueue([job])
    assert res.status == "scheduled"
    r = await reserve(broker, "q1", 1, 100, W)
    assert r.jobs == []
    assert r.next_due_ms is not None and 0 < r.next_due_ms - r.now_ms <= 300
    await asyncio.sleep(0.35)
    r = await reserve(broker, "q1", 1, 100, W)
    assert [j.id for j in r.jobs] == [job.id]


async def test_idempotency_key_returns_the_first_job(broker: Broker) -> None:
    first = new_job(idempotency_key="k1", fingerprint="fp1")
    second = new_job(idempotency_key="k1", fingerprint="fp2")
    (a,) = await broker.enqueue([first])
    (b,) = await broker.enqueue([second])
    assert a.id == first.id and not a.duplicate
    assert b.id == first.id and b.duplicate and b.fingerprint == "fp1"
    assert (await stats(broker))["queued"] == 1


async def test_batch_enqueue_across_queues(broker: Broker) -> None:
    jobs = [new_job("qa"), new_job("qb"), new_job("qa")]
    results = await broker.enqueue(jobs)
    assert [r.id for r in results] == [j.id for j in jobs]
    assert set(await broker.known_queues()) == {"qa", "qb"}
    assert (await stats(broker, "qa"))["queued"] == 2


@pytest.mark.parametrize("count", [1, 7])
async def test_orphan_ids_are_dropped(broker: Broker, count: int) -> None:
    k = broker.keys("q1")
    await broker.redis.rpush(k.queued, *[f"ghost{i}" for i in range(count)])
    r = await reserve(broker, "q1", 10, 1000, W)
    assert r.jobs == [] and [d.reason for d in r.dropped] == ["orphan"] * count
    assert (await stats(broker))["orphans"] == count


async def test_registry_heartbeat_workers_unregister(broker: Broker) -> None:
    advert = WorkerAdvert("w1", "host", 42, ["q1"], ["t"], 4, 1.5)
    await broker.heartbeat(advert, ttl_s=30)
    (seen,) = await broker.workers()
    assert seen.id == "w1" and seen.types == ["t"] and seen.last_seen_ms > 0
    await broker.unregister("w1")
    assert await broker.workers() == []


async def test_wait_for_work_wakes_on_enqueue_and_times_out(broker: Broker) -> None:
    assert await broker.wait_for_work(["q1"], 0.05) is False
    waiter = asyncio.ensure_future(broker.wait_for_work(["q0", "q1"], 5.0))
    await asyncio.sleep(0.05)
    await broker.enqueue([new_job()])
    assert await asyncio.wait_for(waiter, 2.0) is True
    await broker.aclose()  # closes the broker's own blocking connection too
