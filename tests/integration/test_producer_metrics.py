"""GET /metrics on the producer: the fleet's figures with no worker running, and the cost of a
scrape in Redis round trips (bounded whatever the number of queues and job types)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import redis
from litestar.testing import AsyncTestClient
from redis.asyncio.connection import AbstractConnection
from redis_server import RedisServer
from wq_testkit import REDIS_URL, TEST_PLUGIN

from workqueue.broker import BrokerConfig
from workqueue.broker.keys import GlobalKeys, QueueKeys
from workqueue.producer import ProducerSettings, create_app
from workqueue.registry import build_registry
from workqueue.worker.metrics import RunTimeHistogram, render_prometheus

PROMETHEUS = "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"


def app_for(url: str, prefix: str, api_key: str | None = None) -> AsyncTestClient[Any]:
    settings = ProducerSettings(redis_url=url, broker=BrokerConfig(prefix=prefix), api_key=api_key)
    return AsyncTestClient(create_app(settings, build_registry(only=[TEST_PLUGIN])))


@pytest.fixture
async def producer(installed_test_plugin: None, key_prefix: str) -> AsyncIterator[Any]:
    async with app_for(REDIS_URL, key_prefix) as client:
        client.headers["Content-Type"] = "application/json"
        yield client


async def test_metrics_with_no_worker_count_queues_by_status(producer: Any) -> None:
    for _ in range(3):
        assert (await producer.post("/enqueue", json={"type": "test_echo"})).status_code == 202
    body = {"type": "test_echo", "queue": "mail", "delay": 600}
    assert (await producer.post("/enqueue", json=body)).status_code == 202

    answer = await producer.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    figures = answer.json()
    assert "worker" not in figures  # no process of its own to describe
    assert figures["total_jobs_in_queue"] == 3 and figures["scheduled"] == 1
    assert figures["enqueued"] == 4 and figures["jobs_done"] == 0
    default, mail = figures["queues"]["default"], figures["queues"]["mail"]
    assert default["depth"] == {
        "scheduled": 0,
        "queued": 3,
        "active": 0,
        "retrying": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
    }
    assert mail["depth"]["scheduled"] == 1 and mail["depth"]["queued"] == 0
    assert default["oldest_waiting_seconds"] >= 0 and mail["oldest_waiting_seconds"] == 0
    # the same figures under the seed's prefix
    assert (await producer.get("/api/metrics")).json()["queues"].keys() == {"default", "mail"}

    prom = await producer.get("/metrics", headers={"Accept": PROMETHEUS})
    assert prom.status_code == 200
    assert prom.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = prom.text
    assert 'workqueue_queue_depth{queue="default",status="queued"} 3' in text
    assert 'workqueue_queue_depth{queue="mail",status="scheduled"} 1' in text
    assert 'workqueue_jobs_in_queue{queue="default"} 3' in text
    assert "# TYPE workqueue_oldest_waiting_seconds gauge" in text
    assert 'workqueue_oldest_waiting_seconds{queue="default"}' in text
    assert "workqueue_worker_" not in text and "workqueue_job_run_seconds" not in text


async def test_oldest_waiting_age_per_queue(producer: Any, key_prefix: str) -> None:
    answer = await producer.post("/enqueue", json={"type": "test_echo", "queue": "old"})
    job_id = answer.json()["id"]
    r = redis.Redis.from_url(REDIS_URL)
    try:  # as if it had waited an hour
        now_ms = int(r.time()[0]) * 1000
        r.hset(QueueKeys(key_prefix, "old").job(job_id), "enqueued_at", now_ms - 3_600_000)
    finally:
        r.close()
    await producer.post("/enqueue", json={"type": "test_echo", "queue": "new"})
    queues = (await producer.get("/metrics")).json()["queues"]
    assert 3600 <= queues["old"]["oldest_waiting_seconds"] < 3700
    assert queues["new"]["oldest_waiting_seconds"] < 60


async def test_metrics_need_the_api_key(installed_test_plugin: None, key_prefix: str) -> None:
    async with app_for(REDIS_URL, key_prefix, api_key="s3cret") as client:
        for path in ("/metrics", "/api/metrics"):
            refused = await client.get(path)
            assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
            assert "total_jobs_in_queue" not in refused.text
        ok = await client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["total_jobs_in_queue"] == 0
        document = (
            await client.get("/schema/openapi.json", headers={"Authorization": "Bearer s3cret"})
        ).json()
    operation = document["paths"]["/metrics"]["get"]
    assert operation["security"] == [{"bearer": []}]
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/plain"}
    assert {"401", "503"} <= set(operation["responses"])


async def test_unreachable_redis_is_a_503(installed_test_plugin: None, key_prefix: str) -> None:
    from redis_server import free_port

    async with app_for(f"redis://127.0.0.1:{free_port()}/0", key_prefix) as client:
        answer = await client.get("/metrics")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"


def test_worker_rendering_keeps_its_own_section() -> None:
    """The worker's /metrics shares the rendering: the depth gauges and its own section."""
    histogram = RunTimeHistogram()
    histogram.observe("t", "succeeded", 0.02)
    figures = {
        "queues": {
            "q": {
                "jobs_in_queue": 1,
                "running": 0,
                "scheduled": 0,
                "retrying": 0,
                "jobs_done": 0,
                "jobs_failed": 0,
                "jobs_cancelled": 0,
                "failed_attempts": 0,
                "lost_leases": 0,
                "oldest_waiting_seconds": 1.5,
                "depth": {"queued": 1, "failed": 2},
            }
        },
        "types": {},
        "worker": {"uptime_seconds": 3.0, "running": 0, "succeeded": 1},
    }
    text = render_prometheus(figures, histogram)
    assert 'workqueue_queue_depth{queue="q",status="failed"} 2' in text
    assert "workqueue_worker_succeeded_total 1" in text
    assert 'workqueue_job_run_seconds_count{type="t",outcome="succeeded"} 1' in text


# ---------------------------------------------------------------------------------------------
# What one scrape costs
# ---------------------------------------------------------------------------------------------


class Sends:
    """Counts the requests this process writes to Redis: a plain command or a whole pipeline
    is one ``send_packed_command`` (one round trip)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = AbstractConnection.send_packed_command

        async def counted(conn: AbstractConnection, *args: Any, **kwargs: Any) -> None:
            self.count += 1
            await real(conn, *args, **kwargs)

        monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)


def _fill(server: RedisServer, prefix: str, n_queues: int) -> None:
    """``n_queues`` queues, each with a waiting job (so the oldest-age read runs for every
    queue: the worst case) and counters of its own job type (as many types as queues)."""
    admin = server.client()
    try:
        names = [f"q{i:03d}" for i in range(n_queues)]
        admin.sadd(GlobalKeys(prefix).queues, *names)
        pipe = admin.pipeline(transaction=False)
        for i, q in enumerate(names):
            k = QueueKeys(prefix, q)
            pipe.rpush(k.queued, "j")
            pipe.hset(k.job("j"), mapping={"status": "queued", "enqueued_at": 1, "type": "t"})
            pipe.hset(k.stats, mapping={"enqueued": 1, f"done|type{i}": 2, "done": 2})
        pipe.execute()
    finally:
        admin.close()


def _server_counters(admin: redis.Redis) -> tuple[int, int]:
    """(reads processed, commands processed); each call adds one read and one command."""
    stats = admin.info("stats")
    commands = admin.info("commandstats")
    calls = sum(int(v["calls"]) for v in commands.values() if isinstance(v, dict))
    return int(stats["total_reads_processed"]), calls


async def test_one_scrape_costs_the_same_round_trips_for_1_10_and_200_queues(
    installed_test_plugin: None, server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sends = Sends(monkeypatch)
    admin = server.client()
    measured: dict[int, tuple[int, int, int]] = {}
    for n_queues in (1, 10, 200):
        prefix = f"cost{n_queues}"
        _fill(server, prefix, n_queues)
        async with app_for(server.url, prefix) as client:
            warm = await client.get("/metrics")  # connects (HELLO, CLIENT SETINFO...)
            assert warm.status_code == 200
            before_reads, before_calls = _server_counters(admin)
            sends.count = 0
            answer = await client.get("/metrics", headers={"Accept": PROMETHEUS})
            trips = sends.count
            after_reads, after_calls = _server_counters(admin)
        assert answer.status_code == 200
        text = answer.text
        assert text.count("workqueue_queue_depth{") == 7 * n_queues
        assert text.count("workqueue_type_jobs_done_total{") == n_queues
        # INFO commandstats of "before" and INFO stats of "after" fall in between
        measured[n_queues] = (trips, after_reads - before_reads - 2, after_calls - before_calls - 2)
        assert msgspec.json.decode(warm.content)["total_jobs_in_queue"] == n_queues
    admin.close()
    print("\nqueues  round trips (client)  reads (server)  commands")
    for n, (trips, reads, calls) in measured.items():
        print(f"{n:>6}  {trips:>20}  {reads:>14}  {calls:>8}")
    assert {trips for trips, _, _ in measured.values()} == {measured[1][0]}, measured
    assert measured[1][0] <= 3, measured
