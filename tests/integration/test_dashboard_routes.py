"""The dashboard's routes in process (Litestar's AsyncTestClient, real Redis): the static page
and its CSP, the API key on every data route and action, retry, payload on request, limits.
The page itself is tested in a real Chromium by tests/browser/."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from wq_testkit import REDIS_URL, TEST_PLUGIN, WorkerProcs

from workqueue.broker import BrokerConfig
from workqueue.client import Client
from workqueue.producer import ProducerSettings, create_app
from workqueue.registry import build_registry

KEY = "dash-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}
DATA_ROUTES = [
    "/ui/api/overview",
    "/ui/api/workers",
    "/ui/api/jobs?status=failed",
    "/ui/api/jobs/some-id/payload",
    "/jobs/some-id",
    "/limits",
    "/schedules",
]


@pytest.fixture
async def app_client(
    installed_test_plugin: None, key_prefix: str
) -> AsyncIterator[AsyncTestClient[Any]]:
    settings = ProducerSettings(
        redis_url=REDIS_URL, broker=BrokerConfig(prefix=key_prefix), api_key=KEY
    )
    app = create_app(settings, build_registry(only=[TEST_PLUGIN]))
    async with AsyncTestClient(app) as client:
        yield client


async def _failed_job(client: Client, workers: WorkerProcs) -> str:
    """A job failed by a real worker (test_permanent fails for good at once)."""
    job = await client.enqueue("test_permanent", {"secret": "s3cr3t-value"}, queue="dash")
    worker = workers.start("--queue", "dash")
    deadline = time.monotonic() + 30
    while (await client.get_job(job.id)).status != "failed":
        assert time.monotonic() < deadline, "the worker never failed the job"
        await asyncio.sleep(0.1)
    os.killpg(worker.pid, signal.SIGKILL)  # the retried job must stay queued
    worker.wait(timeout=10)
    return job.id


async def test_page_is_public_with_a_strict_csp(app_client: AsyncTestClient[Any]) -> None:
    page = await app_client.get("/ui")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert '<script src="/ui/static/app.js"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere
    for name in ("app.js", "app.css", "favicon.svg"):
        answer = await app_client.get(f"/ui/static/{name}")
        assert answer.status_code == 200, name
        assert answer.headers["content-security-policy"] == csp
    assert (await app_client.get("/ui/static/..%2Fapp.py")).status_code == 404
    assert (await app_client.get("/ui/static/read_routes.py")).status_code == 404


async def test_every_data_route_needs_the_key(app_client: AsyncTestClient[Any]) -> None:
    session = await app_client.get("/ui/api/session")
    assert session.json() == {"key_required": True, "key_ok": False}
    wrong = await app_client.get("/ui/api/session", headers={"Authorization": "Bearer nope"})
    assert wrong.json() == {"key_required": True, "key_ok": False}
    right = await app_client.get("/ui/api/session", headers=AUTH)
    assert right.json() == {"key_required": True, "key_ok": True}
    for path in DATA_ROUTES:
        answer = await app_client.get(path)
        assert answer.status_code == 401, path
        assert "queues" not in answer.text
    for path in ("/jobs/x/retry", "/jobs/x/cancel", "/api/jobs/x/retry"):
        answer = await app_client.post(path, json={})
        assert answer.status_code == 401, path
    assert (await app_client.get("/ui/api/overview", headers=AUTH)).status_code == 200


async def test_cross_site_retry_is_refused(app_client: AsyncTestClient[Any]) -> None:
    for headers in (
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "https://evil.example"},
    ):
        answer = await app_client.post("/jobs/x/retry", json={}, headers={**AUTH, **headers})
        assert answer.status_code == 403, headers


async def test_retry_payload_and_lists(
    app_client: AsyncTestClient[Any], client: Client, workers: WorkerProcs
) -> None:
    job_id = await _failed_job(client, workers)
    listed = await app_client.get("/ui/api/jobs?status=failed", headers=AUTH)
    assert [j["id"] for j in listed.json()] == [job_id]
    assert "s3cr3t-value" not in listed.text  # no payload value in listings
    detail = await app_client.get(f"/jobs/{job_id}", headers=AUTH)
    assert "s3cr3t-value" not in detail.text  # nor in the job's detail
    payload = await app_client.get(f"/ui/api/jobs/{job_id}/payload", headers=AUTH)
    assert payload.json() == {"id": job_id, "payload": {"secret": "s3cr3t-value"}}
    assert payload.headers["cache-control"] == "no-store"
    overview = (await app_client.get("/ui/api/overview", headers=AUTH)).json()
    (row,) = overview["queues"]
    assert row["name"] == "dash" and row["depth"]["failed"] == 1 and row["failed"] == 1

    retried = await app_client.post(f"/jobs/{job_id}/retry", json={}, headers=AUTH)
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "queued"
    again = await app_client.post(f"/api/jobs/{job_id}/retry", json={}, headers=AUTH)
    assert again.status_code == 409 and again.json()["error"] == "job_not_failed"
    unknown = await app_client.post("/jobs/no-such-job/retry", json={}, headers=AUTH)
    assert unknown.status_code == 404
    missing = await app_client.get("/ui/api/jobs/no-such-job/payload", headers=AUTH)
    assert missing.status_code == 404
    bad = await app_client.get("/ui/api/jobs?status=nonsense", headers=AUTH)
    assert bad.status_code == 400


async def test_limits_lists_declared_limits(app_client: AsyncTestClient[Any]) -> None:
    rows = (await app_client.get("/api/limits", headers=AUTH)).json()
    by_type = {row["type"]: row for row in rows}
    assert by_type["test_limited_conc"]["effective"]["concurrency"] == 2
    assert by_type["test_limited_rate"]["effective"]["rate"] == "10/s"


def test_the_wheel_ships_the_dashboard(tmp_path: Path) -> None:
    """No build step: the wheel holds the page's files as they are in the tree."""
    from test_newuser_packaging import ROOT, build_wheel

    with build_wheel(ROOT, tmp_path) as wheel:
        for name in ("index.html", "app.js", "app.css", "favicon.svg"):
            shipped = wheel.read(f"workqueue/producer/ui/{name}")
            assert shipped == (ROOT / "core/workqueue/producer/ui" / name).read_bytes(), name
