"""Retention, idempotency and fleet-wide queue settings (issue 10, defects 5, 7 and 8).

Settings are written to ``<p>:{q}:settings`` directly where the test must also run against the
code before Engine 2 (the hash is the documented contract between the CLI and the scripts);
``_reserve`` / ``_finish`` / ``_housekeep`` speak both APIs for the same reason. Run against
that code, these tests fail where the defects are.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from redis_server import RedisServer

from workqueue.broker import Broker, BrokerConfig
from workqueue.broker.connection import create_redis
from workqueue.broker.contract import Lease
from workqueue.errors import TaskValidationError
from workqueue.job import NewJob, ReservedJob

PREFIX = "qs"


@pytest.fixture
async def make(server: RedisServer, admin: redis.Redis) -> AsyncIterator[Any]:
    made: list[Broker] = []

    def factory(**config: Any) -> Broker:
        b = Broker(create_redis(server.url), BrokerConfig(prefix=PREFIX, **config))
        made.append(b)
        return b

    yield factory
    for b in made:
        await b.redis.aclose()


def new_job(queue: str = "q", **kw: Any) -> NewJob:
    fields: dict[str, Any] = dict(
        id=uuid.uuid4().hex, type="t", queue=queue, payload=b"{}", retries=0, timeout=10.0
    )
    fields.update(kw)
    return NewJob(**fields)


async def _reserve(broker: Broker, queue: str, count: int) -> list[ReservedJob]:
    if "requests" in inspect.signature(broker.reserve).parameters:  # before Engine 2
        (res,) = await broker.reserve([(queue, count)], lease_ms=5000, worker_id="w")  # type: ignore[arg-type, call-arg]
    else:
        res = await broker.reserve(
            queue, count, lease_ms=5000, worker_id="w", request_id=uuid.uuid4().hex
        )
    return list(res.jobs)


async def _finish(broker: Broker, queue: str, op: str, job: ReservedJob) -> str:
    from workqueue.broker import contract

    kind: Any = contract.OpKind(op) if hasattr(contract, "OpKind") else op
    finish_op = contract.FinishOp(kind, job.id, job.token, "x", -1)
    (outcome,) = (await broker.finish({queue: [finish_op]}))[queue]
    return str(outcome)


async def _housekeep(broker: Broker, queue: str) -> None:
    """A housekeeping step (before Engine 2: an idle reserve, which trimmed indexes)."""
    if hasattr(broker, "housekeep"):
        assert (await broker.housekeep(queue, worker_id="hk", duty_ms=5000)).held
    else:
        await _reserve(broker, queue, 0)


async def test_ttl_zero_means_not_kept_for_completed_and_failed(
    make: Any, admin: redis.Redis
) -> None:
    # Given a process whose retention is 0 for both completed and failed jobs
    broker = make(completed_ttl_s=0, failed_ttl_s=0)
    ok, bad = new_job(), new_job()
    await broker.enqueue([ok, bad])
    a, b = await _reserve(broker, "q", 2)
    # When one completes and one fails for good
    assert await _finish(broker, "q", "ack", a) == "completed"
    assert await _finish(broker, "q", "fail", b) == "failed"
    # Then neither record is kept (nor indexed), the same rule for both
    k = broker.keys("q")
    assert admin.exists(k.job(ok.id)) == 0
    assert admin.exists(k.job(bad.id)) == 0
    assert admin.zcard(k.completed) == 0 and admin.zcard(k.failed) == 0


async def test_an_idempotency_key_never_outlives_its_record(make: Any, admin: redis.Redis) -> None:
    # Given a completed retention (0.5 s) far shorter than the idempotency key's (24 h)
    broker = make(completed_ttl_s=0.5)
    first = new_job(idempotency_key="order-1", fingerprint="f")
    await broker.enqueue([first])
    (job,) = await _reserve(broker, "q", 1)
    assert await _finish(broker, "q", "ack", job) == "completed"
    k = broker.keys("q")
    idem = k.idem_prefix + "order-1"
    # Then while the record is kept, posting again with the key returns that job...
    (again,) = await broker.enqueue([new_job(idempotency_key="order-1", fingerprint="f")])
    assert again.id == first.id and again.duplicate
    # ... and the key expires no later than the record is due to go
    assert 0 < admin.pttl(idem) <= 500
    # When the retention passes and housekeeping trims the record
    await asyncio.sleep(0.6)
    await _housekeep(broker, "q")
    assert admin.exists(k.job(first.id)) == 0
    # Then the key is gone with it, and a retried post makes a new job (the documented
    # window: min(idempotency ttl, the job's retention))
    assert admin.exists(idem) == 0
    retry = new_job(idempotency_key="order-1", fingerprint="f")
    (fresh,) = await broker.enqueue([retry])
    assert fresh.id == retry.id and not fresh.duplicate


async def test_ttl_zero_deletes_the_idempotency_key_with_the_record(
    make: Any, admin: redis.Redis
) -> None:
    broker = make(completed_ttl_s=0)
    await broker.enqueue([new_job(idempotency_key="k0")])
    (job,) = await _reserve(broker, "q", 1)
    await _finish(broker, "q", "ack", job)
    assert admin.exists(broker.keys("q").idem_prefix + "k0") == 0


async def test_stored_settings_win_over_process_defaults(make: Any, admin: redis.Redis) -> None:
    # Given two processes with different retention defaults, and the queue configured to keep
    # completed jobs for an hour (as `workqueue queues set q --completed-ttl 3600` writes it)
    short, long = make(completed_ttl_s=0.2), make(completed_ttl_s=3600)
    k = short.keys("q")
    settings = f"{PREFIX}:{{q}}:settings"  # the documented key, spelt out
    admin.hset(settings, mapping={"completed_ttl_ms": 3_600_000})
    # When the short-default process finishes a job and housekeeps after its own default
    await short.enqueue([job := new_job()])
    (held,) = await _reserve(short, "q", 1)
    await _finish(short, "q", "ack", held)
    await asyncio.sleep(0.4)
    await _housekeep(short, "q")
    # Then the record is kept: the stored setting wins over the process's flag
    assert admin.exists(k.job(job.id)) == 1
    # And when the stored retention is short, the long-default process trims by it
    admin.hset(settings, mapping={"completed_ttl_ms": 100})
    await asyncio.sleep(0.2)
    await _housekeep(long, "q")
    assert admin.exists(k.job(job.id)) == 0


async def test_set_queue_settings_validates_and_reads_back(make: Any) -> None:
    broker = make(failed_ttl_s=60)
    before = (await broker.queue_settings(["q"]))["q"]
    assert not before.configured and before.failed_ttl_s == 60
    now = await broker.set_queue_settings("q", completed_ttl_s=0, max_lost_leases=5)
    assert now.configured and now.completed_ttl_s == 0 and now.max_lost_leases == 5
    assert now.failed_ttl_s == 60  # unset: still this process's default
    with pytest.raises(Exception, match="max_lost_leases"):
        await broker.set_queue_settings("q", max_lost_leases=0)
    assert "q" in await broker.known_queues()


async def test_stored_lost_lease_cap_is_used(make: Any) -> None:
    broker = make(max_lost_leases=10)
    await broker.set_queue_settings("q", max_lost_leases=1)
    await broker.enqueue([new_job()])
    await broker.reserve("q", 1, lease_ms=50, worker_id="w", request_id="r")
    await asyncio.sleep(0.1)
    step = await broker.housekeep("q", worker_id="hk", duty_ms=5000)
    assert [r.outcome for r in step.recovered] == ["failed"]


async def test_renew_of_one_queue_is_one_round_trip(make: Any, admin: redis.Redis) -> None:
    # Given a job held under its token, and the renew script already loaded
    broker = make()
    await broker.enqueue([new_job()])
    (job,) = await _reserve(broker, "q", 1)
    lease: Any = Lease(job.id, job.token)
    if "tuple" in str(inspect.signature(broker.renew).parameters["leases"].annotation):
        lease = job.id, job.token  # before Engine 2: (id, token) pairs
    await broker.renew({"q": [lease]}, lease_ms=5000)
    # When it is renewed
    reads = int(admin.info("stats")["total_reads_processed"])
    before = {n: int(v["calls"]) for n, v in admin.info("commandstats").items()}
    assert (await broker.renew({"q": [lease]}, lease_ms=5000)).lost == {}
    after = {n: int(v["calls"]) for n, v in admin.info("commandstats").items()}
    reads = int(admin.info("stats")["total_reads_processed"]) - reads
    # Then the client sent one EVALSHA and nothing else (no SCRIPT EXISTS of a pipeline):
    # one round trip (the other reads are the three INFO calls after the first snapshot)
    assert after.get("cmdstat_evalsha", 0) - before.get("cmdstat_evalsha", 0) == 1
    assert after.get("cmdstat_script", 0) == before.get("cmdstat_script", 0)
    assert reads == 4


async def test_queue_registry_is_capped(make: Any, admin: redis.Redis) -> None:
    # Given a fleet allowing 3 queues
    broker = make(max_queues=3)
    await broker.enqueue([new_job(f"q{i}") for i in range(3)])
    # When a client names a fourth
    with pytest.raises(TaskValidationError, match="limit of 3 queues"):
        await broker.enqueue([new_job("q-new")])
    # Then nothing was written for it, and known queues still work
    assert admin.scard(f"{PREFIX}:queues") == 3
    assert admin.llen(broker.keys("q-new").queued) == 0
    await broker.enqueue([new_job("q1")])
