"""GET /metrics on a worker subprocess: the seed's JSON fields and the Prometheus format."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest
from redis_server import free_port
from wq_testkit import WorkerProcs

from workqueue.client import Client

pytestmark = pytest.mark.slow


async def get_metrics(port: int, accept: str | None = None) -> httpx.Response:
    headers = {"Accept": accept} if accept else {}
    deadline = time.monotonic() + 15
    async with httpx.AsyncClient() as http:
        while True:
            try:
                return await http.get(f"http://127.0.0.1:{port}/api/metrics", headers=headers)
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "metrics server never came up"
                await asyncio.sleep(0.1)


async def test_metrics_count_jobs_system_wide(client: Client, workers: WorkerProcs) -> None:
    port = free_port()
    workers.start(env={"WORKQUEUE_METRICS_PORT": str(port)})
    done = [await client.enqueue("test_echo", {"i": i}) for i in range(3)]
    failed = await client.enqueue("test_permanent", {})
    later = await client.enqueue("test_echo", {}, delay=60)
    for _ in range(200):
        body = (await get_metrics(port)).json()
        if body["jobs_done"] == 3 and body["jobs_failed"] == 1:
            break
        await asyncio.sleep(0.05)
    assert body["jobs_done"] == 3 and body["jobs_failed"] == 1
    assert body["total_jobs_in_queue"] == 0 and body["scheduled"] == 1
    assert body["failed_attempts"] == 1
    assert body["queues"]["default"]["jobs_done"] == 3
    assert body["types"]["test_echo"]["done"] == 3
    assert body["worker"]["succeeded"] == 3 and body["worker"]["uptime_seconds"] > 0
    assert done and failed and later.status == "scheduled"

    prom = await get_metrics(port, "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
    assert prom.headers["content-type"].startswith("text/plain")
    text = prom.text
    assert 'workqueue_jobs_done_total{queue="default"} 3' in text
    assert 'workqueue_type_jobs_failed_total{type="test_permanent"} 1' in text
    assert 'workqueue_job_run_seconds_count{type="test_echo",outcome="succeeded"} 3' in text

    json_again = await get_metrics(port, "application/json")
    assert json_again.json()["jobs_done"] == 3


async def test_metrics_server_rejects_junk(workers: WorkerProcs) -> None:
    port = free_port()
    worker = workers.start(env={"WORKQUEUE_METRICS_PORT": str(port)})
    await get_metrics(port)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GARBAGE\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://127.0.0.1:{port}/nope")).status_code == 404
        assert (await http.post(f"http://127.0.0.1:{port}/metrics")).status_code == 405
    assert worker.poll() is None


async def test_busy_metrics_port_is_one_clear_error(workers: WorkerProcs) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = workers.start(env={"WORKQUEUE_METRICS_PORT": str(port)})
        assert worker.wait(timeout=20) == 1
    err = (workers.tmp_path / "worker-0.stderr").read_text()
    assert "error: metrics server cannot listen" in err and "Traceback" not in err
