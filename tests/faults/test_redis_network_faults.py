"""T12: the network between the services and Redis misbehaves (through tests/faults/fault_proxy).

A worker and a producer subprocess talk to Redis only through the fault proxy, under HTTP
load; the proxy then adds 300 ms latency each way, cuts replies with an RST, or black-holes
every socket (half-open), and finally passes again. Proves, for each fault:
- no acknowledged job is lost, every one completes, nothing stays leased or queued;
- no command got another command's reply: every ``test_echo`` result is its own payload,
  each Idempotency-Key maps to one job id;
- outcomes and lease renewals retried over broken connections are applied once: Redis's
  ``done`` equals ``enqueued`` and the worker's own ``succeeded`` equals ``done``;
- the producer answers only 202/200/503 (503 with Retry-After), never hangs.
And: a producer request cancelled by its deadline while its Redis command is in flight leaves
no stale reply behind for the next request on that connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fault_proxy import FaultProxy
from redis_load import (
    Load,
    check_echo_results,
    job_key,
    tally,
    wait_completed,
    wait_settled,
    worker_metrics,
)
from redis_server import RedisServer, free_port
from services import Proc, Services, wait_http

pytestmark = pytest.mark.slow

LEASE = 2.0


@pytest.fixture
def proxy(private_redis: RedisServer) -> Iterator[FaultProxy]:
    p = FaultProxy(private_redis.port).start()
    yield p
    p.close()


def _start(services: Services, proxy: FaultProxy) -> tuple[Proc, Proc]:
    worker = services.worker(proxy.url, lease=LEASE, metrics_port=free_port())
    producer = services.producer(proxy.url)
    wait_http(worker, "/metrics")
    wait_http(producer, "/ready")
    return worker, producer


def _run_fault(
    services: Services,
    proxy: FaultProxy,
    server: RedisServer,
    key_prefix: str,
    tmp_path: Path,
    fault: Callable[[FaultProxy], None],
    *,
    fault_seconds: float,
    sleep: float = 0.05,
) -> dict[str, Any]:
    worker, producer = _start(services, proxy)
    assert worker.url is not None and producer.url is not None
    load = Load(
        producer.url, tmp_path / "ledger.jsonl", job_type="mixed", retry=True, sleep=sleep
    ).start()
    time.sleep(1.5)
    fault(proxy)
    time.sleep(fault_seconds)
    proxy.pass_through()
    healed = time.monotonic()
    time.sleep(2.5)
    load.stop()

    load.check_answers(max_seconds=8.0)
    ids = [a.job_id or "" for a in load.accepted.values()]
    statuses = wait_completed(server.client, key_prefix, ids, timeout=45)
    state = wait_settled(server.client, key_prefix, timeout=30)
    settled_s = time.monotonic() - healed
    result = tally(load, statuses)
    assert result.lost == [], (result.row(), {i: statuses.get(i) for i in result.lost})
    assert state["active_now"] == 0 and state["queued_now"] == 0, state
    assert state["retry_now"] == 0 and state.get("failed", 0) == 0, state
    assert state["done"] == state["enqueued"], state
    with server.client() as client:
        echoed = check_echo_results(client, key_prefix, load)
    assert echoed > 0
    figures = worker_metrics(worker.url)
    assert figures is not None
    assert figures["worker"]["succeeded"] == state["done"], (figures["worker"], state)
    assert worker.alive() and producer.alive()
    with server.client() as client:
        pipe = client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(job_key(key_prefix, job_id), "lost")
        lost_per_job = [int(x or 0) for x in pipe.execute()]
    return {
        "max_lost_leases_of_one_job": max(lost_per_job, default=0),
        "tally": result.row(),
        "answers": dict(load.statuses()),
        "lost_leases": state.get("lost_leases", 0),
        "settled_after_heal_s": round(settled_s, 2),
        "proxy": proxy.stats,
    }


def test_latency_300ms_each_way_under_load(
    services: Services,
    proxy: FaultProxy,
    private_redis: RedisServer,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    report = _run_fault(
        services,
        proxy,
        private_redis,
        key_prefix,
        tmp_path,
        lambda p: p.latency(0.3),
        fault_seconds=5.0,
        sleep=1.0,  # jobs outlive a renewal interval: renewals run through the latency
    )
    print(f"\nT12 latency 300ms: {report}")


def test_rst_in_the_middle_of_replies(
    services: Services,
    proxy: FaultProxy,
    private_redis: RedisServer,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    report = _run_fault(
        services,
        proxy,
        private_redis,
        key_prefix,
        tmp_path,
        lambda p: p.reset_replies(every=5, keep=3),
        fault_seconds=4.0,
        sleep=1.0,
    )
    assert proxy.stats.resets > 0
    print(f"\nT12 RST mid-reply: {report}")


def test_black_hole_is_detected_by_socket_timeouts(
    services: Services,
    proxy: FaultProxy,
    private_redis: RedisServer,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    report = _run_fault(
        services,
        proxy,
        private_redis,
        key_prefix,
        tmp_path,
        lambda p: p.black_hole(),
        fault_seconds=4.0,
    )
    assert proxy.stats.blackholed_connections > 0
    print(f"\nT12 black hole 4 s: {report}")


def test_cancelled_in_flight_commands_leave_no_stale_reply(
    services: Services,
    proxy: FaultProxy,
    private_redis: RedisServer,
    key_prefix: str,
) -> None:
    # Given completed test_echo jobs, each with its own payload
    worker, producer = _start(services, proxy)
    assert producer.url is not None
    http = httpx.Client(base_url=producer.url, timeout=15)
    jobs: dict[str, str] = {}
    for n in range(12):
        answer = http.post("/enqueue", json={"type": "test_echo", "payload": {"n": n}})
        assert answer.status_code == 202, answer.text
        jobs[answer.json()["id"]] = f"{n}"
    statuses = wait_completed(private_redis.client, key_prefix, list(jobs), timeout=30)
    assert set(statuses.values()) == {"completed"}, statuses

    answers: list[tuple[str, int, Any]] = []
    lock = threading.Lock()

    def get_all() -> None:
        def one(job_id: str) -> None:
            r = http.get(f"/jobs/{job_id}")  # httpx.Client is thread-safe; one pool
            with lock:
                answers.append((job_id, r.status_code, r.json()))

        threads = [threading.Thread(target=one, args=(j,)) for j in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)

    # When a GET /jobs/{id} (two round trips) meets a latency around the 2 s request deadline,
    # so that requests are cancelled at every stage of a command in flight
    for delay in (0.2, 0.3, 0.4, 0.5):
        proxy.latency(delay)
        get_all()
    # and enqueues are cancelled too (a cancelled enqueue may or may not have happened)
    r = http.post("/enqueue", json={"type": "test_echo", "payload": {"n": -1}})
    assert r.status_code in (202, 503), r.text
    cancelled = sum(1 for _j, s, _b in answers if s == 503)
    served = len(answers) - cancelled
    for job_id, status, body in answers:
        assert status in (200, 503), body
        if status == 200:
            assert body["result"] == {"n": int(jobs[job_id])}, (job_id, body)

    # Then, once the latency is gone, every request gets its own job, on reused connections
    proxy.pass_through()
    answers.clear()
    for _ in range(3):
        get_all()
    assert len(answers) == 3 * len(jobs)
    for job_id, status, body in answers:
        assert status == 200, body
        assert body["id"] == job_id
        assert body["type"] == "test_echo"
        assert body["result"] == {"n": int(jobs[job_id])}, (job_id, body)
    assert cancelled > 0, "no request was cancelled in flight: the test proved nothing"
    http.close()
    assert worker.alive() and producer.alive()
    print(f"\nT12 cancellation: {cancelled} requests cut by the deadline, {served} served")
