"""The read model (workqueue/broker/reads.py) against the real Redis: what each figure is, and
how many round trips a read costs whatever the number of queues."""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis.asyncio.client import Pipeline

from workqueue.broker import Broker
from workqueue.broker.contract import JobLocation, WorkerAdvert
from workqueue.client import Client
from workqueue.worker.metrics import summarize


class RoundTrips:
    """Counts the client's round trips (a plain command or a whole pipeline is one) and the
    names of the commands sent."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, broker: Broker) -> None:
        self.count = 0
        self.commands: list[str] = []
        plain = broker.redis.execute_command
        pipelined = Pipeline.execute

        async def one(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            self.commands.append(str(args[0]).upper())
            return await plain(*args, **kwargs)

        async def many(pipe: Pipeline, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            self.commands += [str(c[0][0]).upper() for c in pipe.command_stack]
            return await pipelined(pipe, *args, **kwargs)

        monkeypatch.setattr(broker.redis, "execute_command", one)
        monkeypatch.setattr(Pipeline, "execute", many)

    def reset(self) -> None:
        self.count = 0
        self.commands = []


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch, broker: Broker) -> RoundTrips:
    return RoundTrips(monkeypatch, broker)


async def _register(broker: Broker, *queues: str) -> None:
    await broker.redis.sadd(broker.globals.queues, *queues)


@pytest.mark.parametrize("n_queues", [1, 10, 100])
async def test_figures_cost_two_round_trips_whatever_the_number_of_queues(
    broker: Broker, trips: RoundTrips, n_queues: int
) -> None:
    names = [f"q{i:03d}" for i in range(n_queues)]
    await _register(broker, *names)
    for q in names:  # a waiting job in every queue (at priority 0 and 5): the oldest counts
        k = broker.keys(q)
        await broker.redis.rpush(k.queued, "j1")
        await broker.redis.hset(k.job("j1"), mapping={"status": "queued", "enqueued_at": 5})
        await broker.redis.rpush(k.queued + ":5", "j2")
        await broker.redis.hset(k.job("j2"), mapping={"status": "queued", "enqueued_at": 1})
    trips.reset()
    await broker.figures()  # a process's first call also reads the partition layouts: 3
    assert trips.count == 3
    trips.reset()
    figures = await broker.figures()
    assert trips.count == 2
    assert trips.commands.count("SMEMBERS") == 1 and trips.commands.count("TIME") == 1
    assert trips.commands.count("EVAL") == n_queues
    assert [row.queue for row in figures.queues] == names
    now_s = figures.now_ms / 1000
    assert all(row.queued == 2 for row in figures.queues)
    # the oldest is the priority-5 job (enqueued at 1 ms), not the head of priority 0 (5 ms)
    assert all(abs(row.oldest_waiting_seconds - (now_s - 0.001)) < 0.0005 for row in figures.queues)


async def test_figures_of_empty_queues_cost_two_round_trips(
    broker: Broker, trips: RoundTrips
) -> None:
    await _register(broker, "a", "b")
    await broker.figures(["c"])  # the first call also reads the partition layouts
    trips.reset()
    figures = await broker.figures(["c"])  # c: not known yet, asked for
    assert trips.count == 2
    assert [row.queue for row in figures.queues] == ["a", "b", "c"]
    assert figures.now_ms > 1_600_000_000_000


async def test_each_figure_is_its_index_or_counter(client: Client, broker: Broker) -> None:
    first = await client.enqueue("test_echo", {}, queue="figs")
    await client.enqueue("test_echo", {}, queue="figs")
    await client.enqueue("test_echo", {}, queue="figs", delay=60)
    k = broker.keys("figs")
    await broker.redis.zadd(k.active, {"a1": 1, "a2": 2, "a3": 3})
    await broker.redis.zadd(k.retry, {"r1": 1})
    await broker.redis.zadd(k.completed, {"c1": 1, "c2": 2})
    await broker.redis.zadd(k.failed, {"f1": 1})
    await broker.redis.hset(k.stats, mapping={"done": 7, "done|test_echo": 7, "failed": "junk"})
    await broker.redis.hset(k.job(first.id), "enqueued_at", 1000)  # a very old job

    (row,) = (await broker.queue_figures(["figs"])).queues
    assert (row.queued, row.running, row.scheduled, row.retrying) == (2, 3, 1, 1)
    assert (row.completed_kept, row.failed_kept) == (2, 1)
    assert row.counters["done"] == 7 and row.counters["enqueued"] == 3
    assert row.counters["failed"] == 0  # a corrupt counter reads as 0, as the scripts treat it
    assert row.oldest_waiting_seconds > 1_600_000_000  # the head of the list's enqueued_at

    totals = summarize(await broker.figures())
    assert totals["total_jobs_in_queue"] == 2 and totals["running"] == 3
    assert totals["jobs_done"] == 7 and totals["types"]["test_echo"]["done"] == 7
    assert totals["queues"]["figs"]["scheduled"] == 1

    stats = await broker.queue_stats("figs")
    assert stats["queued"] == 2 and stats["active"] == 3 and stats["failed_kept"] == 1


async def test_workers_pipelined_gets_never_mget(broker: Broker, trips: RoundTrips) -> None:
    g = broker.globals
    advert = {
        "id": "w-1",
        "host": "h",
        "pid": 42,
        "queues": ["default"],
        "types": ["a", "b"],
        "concurrency": 4,
        "started_at": 1.5,
    }
    await broker.redis.set(g.worker("w-1"), json.dumps(advert))
    await broker.redis.set(g.worker("w-2"), b"{not json")
    await broker.redis.set(g.worker("w-3"), json.dumps({**advert, "id": "w-3", "types": ["c"]}))
    await broker.redis.set(g.worker("w-5"), json.dumps({"types": ["d"]}))  # fields missing
    await broker.redis.set(g.worker("w-6"), json.dumps({"types": "not a list"}))
    # w-4: in the registry, its advert expired
    registry = {"w-1": 1000, "w-2": 1001, "w-3": 1002, "w-4": 1003, "w-5": 1004, "w-6": 1005}
    await broker.redis.zadd(g.workers, registry)
    trips.reset()
    workers = await broker.workers()
    assert trips.count == 2 and "MGET" not in trips.commands
    assert trips.commands.count("GET") == 6
    assert [w.id for w in workers] == ["w-1", "w-3", "w-5"]
    assert workers[2].types == ["d"] and workers[2].host == "" and workers[2].last_seen_ms == 1004
    assert workers[0] == WorkerAdvert(
        id="w-1",
        host="h",
        pid=42,
        queues=["default"],
        types=["a", "b"],
        concurrency=4,
        started_at=1.5,
        last_seen_ms=1000,
    )
    assert await broker.advertised_types() == {"a", "b", "c", "d"}


async def test_no_workers_is_one_round_trip(broker: Broker, trips: RoundTrips) -> None:
    assert await broker.workers() == [] and trips.count == 1


async def test_locate_and_list_jobs(client: Client, broker: Broker) -> None:
    a = await client.enqueue("test_echo", {}, queue="one")
    b = await client.enqueue("test_sync_add", {"a": 1, "b": 2}, queue="two")
    found = await broker.locate_jobs([b.id, "nope", a.id, b.id])
    assert found == [
        JobLocation(b.id, "two", "queued", "test_sync_add"),
        JobLocation(a.id, "one", "queued", "test_echo"),
    ]
    assert await broker.locate_jobs([a.id], queue="two") == []
    listed = await broker.list_jobs("queued")
    assert {j.id for j in listed} == {a.id, b.id}
    assert [j.id for j in await broker.list_jobs("queued", "two")] == [b.id]
    with pytest.raises(ValueError, match="status must be one of"):
        await broker.list_jobs("bogus")


async def test_purge_finished_in_steps(broker: Broker) -> None:
    k = broker.keys("p")
    await _register(broker, "p")
    for i in range(5):
        await broker.redis.hset(k.job(f"c{i}"), mapping={"status": "completed"})
        await broker.redis.zadd(k.completed, {f"c{i}": i})
    step = await broker.purge_finished("p", "completed", batch=3)
    assert (step.examined, step.deleted) == (3, 3) and step.cutoff_ms > 0
    step = await broker.purge_finished("p", "completed", batch=3, cutoff_ms=step.cutoff_ms)
    assert (step.examined, step.deleted) == (2, 2)
    assert await broker.redis.zcard(k.completed) == 0
    with pytest.raises(ValueError, match="status must be one of"):
        await broker.purge_finished("p", "queued")
