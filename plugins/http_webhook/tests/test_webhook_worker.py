"""http_webhook run as WorkQueue runs it (workqueue.testing), against a real HTTP receiver.

``run_job``: one attempt with the payload validated and the outcome as the worker records it,
no Redis. ``workqueue_worker``: a real in-process worker on the Redis at
``$WORKQUEUE_REDIS_URL`` (default 127.0.0.1:6379), jobs enqueued through the client.
"""

from __future__ import annotations

import msgspec
import pytest
import workqueue_http_webhook
from webhook_testkit import Receiver, Reply, new_secret, verify

from workqueue.testing import run_job
from workqueue.testing.pytest_plugin import WorkerFactory

SECRET = new_secret(b"worker")


@pytest.fixture(autouse=True)
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKQUEUE_WEBHOOK_ALLOW", "127.0.0.1")
    monkeypatch.setenv("WORKQUEUE_WEBHOOK_SECRET", SECRET)


async def test_a_job_through_the_worker_is_delivered_signed_with_the_job_id(
    receiver: Receiver, workqueue_worker: WorkerFactory
) -> None:
    wq = await workqueue_worker(plugins=[workqueue_http_webhook])

    info = await wq.run("http_webhook", {"url": receiver.url("/orders"), "json": {"order": 42}})

    assert info.status == "completed" and info.result == {"status": 200}
    [request] = receiver.requests
    assert request.target == "/orders"
    assert request.body == msgspec.json.encode({"order": 42})
    assert request.headers["webhook-id"] == info.id
    assert verify(SECRET, request.headers, request.body)


async def test_a_410_fails_the_job_for_good_through_the_worker(
    receiver: Receiver, workqueue_worker: WorkerFactory
) -> None:
    receiver.replies = [Reply(status=410)]
    wq = await workqueue_worker(plugins=[workqueue_http_webhook])

    info = await wq.run("http_webhook", {"url": receiver.url()})

    assert info.status == "failed" and info.attempts == 1
    assert info.error is not None and "410" in info.error
    assert str(receiver.port) not in info.error  # no URL in the recorded error


async def test_one_attempt_as_the_worker_records_it(receiver: Receiver) -> None:
    [job_type] = workqueue_http_webhook.workqueue_job_types()
    receiver.replies = [Reply(status=429, headers={"Retry-After": "7"})]

    limited = await run_job(job_type, {"url": receiver.url()})
    assert limited.status == "retrying" and limited.retry_in_seconds == 7.0

    refused = await run_job(job_type, {"url": "http://10.1.2.3/hook"})
    assert refused.status == "failed" and refused.retry_in_seconds is None
    assert len(receiver.requests) == 1
