"""T10/T11: Redis is SIGKILLed under load and restarted on the same port and append-only file.

Proves, once with ``appendfsync always`` and once with ``everysec``:
- the worker and the producer recover by themselves (neither is restarted);
- while Redis is down the producer answers 503 with Retry-After, never 2xx, never hangs;
- every job acknowledged 202 survives and completes (``always``); with ``everysec`` a lost job
  was acknowledged within the last ~1 s before the kill, and the count is reported;
- the fetch loop resumes: jobs enqueued after the restart complete and the worker's
  ``last_fetch_at`` moves past the restart;
- counters stay exact: Redis's ``done`` equals ``enqueued``, nothing is left leased.
Also: services started before any Redis listens become ready once it does (no restart).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from redis_load import (
    Load,
    RedisFactory,
    queue_state,
    tally,
    wait_completed,
    worker_metrics,
)
from redis_server import RedisServer, free_port
from services import Services, wait_http

pytestmark = pytest.mark.slow

OUTAGE_SECONDS = 3.0


def _finished_after(server: RedisServer, prefix: str, ids: list[str], since_ms: int) -> list[int]:
    from redis_load import job_key

    with server.client() as client:
        pipe = client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(job_key(prefix, job_id), "finished_at", "enqueued_at")
        rows = pipe.execute()
    return sorted(int(f) - since_ms for f, _e in rows if f and int(f) >= since_ms)


@pytest.mark.parametrize(
    "appendfsync", ["always", pytest.param("everysec", marks=pytest.mark.soak)]
)
def test_redis_sigkill_and_restart_under_load(
    appendfsync: str,
    redis_factory: RedisFactory,
    services: Services,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    # Given a worker and a producer on a private Redis, and steady HTTP load
    server = redis_factory(appendfsync=appendfsync)
    metrics_port = free_port()
    worker = services.worker(server.url, lease=2.0, metrics_port=metrics_port)
    producer = services.producer(server.url)
    assert worker.url is not None and producer.url is not None
    wait_http(worker, "/metrics")
    load = Load(producer.url, tmp_path / "ledger.jsonl", threads=3, retry=True).start()
    time.sleep(2.0)

    # When Redis is SIGKILLed (no final fsync) and comes back 3 s later
    server.kill()
    killed_at = time.monotonic()
    time.sleep(OUTAGE_SECONDS)
    down_answers = [a for a in load.answers if a.sent > killed_at + 0.05]
    server.start()
    back_at = time.monotonic()
    with server.client() as client:
        sec, usec = client.time()
    back_ms = sec * 1000 + usec // 1000
    back_wall = time.time()
    time.sleep(3.0)
    load.stop()

    # Then: while down, only 503 + Retry-After, quickly; never 2xx
    load.check_answers()
    assert down_answers, "no request was made while Redis was down"
    during = [a for a in down_answers if a.answered < back_at]
    assert during and all(a.status == 503 for a in during), {a.status for a in during}

    # ... every acknowledged job completes, none stays leased, counters are exact
    ids = [a.job_id for a in load.accepted.values() if a.job_id]
    statuses = wait_completed(server.client, key_prefix, ids, timeout=60)
    result = tally(load, statuses)
    after_restart = [a for a in load.accepted.values() if a.sent > back_at]
    assert after_restart, "no job was accepted after Redis came back"
    for a in after_restart:
        assert statuses[a.job_id or ""] == "completed", a  # the fetch loop resumed
    if appendfsync == "always":
        assert result.lost == [], result.row()
    else:
        by_id = {a.job_id: a for a in load.accepted.values()}
        for job_id in result.lost:  # only the last second before the kill may be lost
            assert killed_at - by_id[job_id].answered < 1.5, by_id[job_id]
    with server.client() as client:
        state = queue_state(client, key_prefix)
    assert state["active_now"] == 0 and state["queued_now"] == 0, state
    assert state["done"] == state["enqueued"], state

    # ... both services lived through it, and the worker fetches again
    assert worker.alive() and producer.alive()
    figures = worker_metrics(worker.url)
    assert figures is not None
    assert figures["worker"]["last_fetch_at"] > back_wall
    assert figures["worker"]["succeeded"] == state["done"], (figures["worker"], state)
    recovery = _finished_after(server, key_prefix, ids, back_ms)
    new_jobs = _finished_after(server, key_prefix, [a.job_id or "" for a in after_restart], back_ms)
    print(
        f"\nT10 appendfsync={appendfsync}: {result.row()} "
        f"lost_ids={result.lost} 503s={load.statuses()[503]} "
        f"recovery_first_completion_s={recovery[0] / 1000 if recovery else None} "
        f"recovery_first_new_job_s={new_jobs[0] / 1000 if new_jobs else None} "
        f"retry_after={sorted({a.retry_after for a in during})}"
    )


def test_services_started_before_redis_exists(
    redis_factory: RedisFactory, services: Services, key_prefix: str, tmp_path: Path
) -> None:
    # Given a worker and a producer started against a port where nothing listens yet
    server = redis_factory(start=False)
    worker = services.worker(server.url, lease=2.0)
    producer = services.producer(server.url, wait="/health")
    assert producer.url is not None
    with httpx.Client(base_url=producer.url, timeout=10) as http:
        # Then the producer is alive but not ready, and refuses work with 503
        assert http.get("/health").status_code == 200
        ready = http.get("/ready")
        assert ready.status_code == 503 and ready.headers.get("retry-after"), ready.text
        refused = http.post("/enqueue", json={"type": "test_echo", "payload": {"n": 1}})
        assert refused.status_code == 503 and refused.headers.get("retry-after")
        time.sleep(1.0)
        assert worker.alive(), worker.log()[-3000:]

        # When redis-server starts on that port
        server.start()
        started = time.monotonic()

        # Then both become ready and jobs flow, with no restart of either service
        wait_http(producer, "/ready", timeout=20)
        answer = http.post("/enqueue", json={"type": "test_echo", "payload": {"n": 7}})
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["id"]
        deadline = time.monotonic() + 30
        while True:
            job = http.get(f"/jobs/{job_id}").json()
            if job["status"] == "completed":
                break
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
        assert job["result"] == {"n": 7}
        print(
            f"\nT10b before-redis: first job completed {time.monotonic() - started:.2f}s "
            "after redis-server started"
        )
    assert worker.alive() and producer.alive()
