"""send_email run as WorkQueue runs it (workqueue.testing), against a real SMTP server.

``run_job``: one attempt with the payload validated and the outcome as the worker records
it, no Redis. ``workqueue_worker``: a real in-process worker on the Redis at
``$WORKQUEUE_REDIS_URL`` (default 127.0.0.1:6379), jobs enqueued through the client.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import workqueue_send_email
from smtp_testkit import Server

from workqueue.testing import run_job
from workqueue.testing.pytest_plugin import WorkerFactory

SENDER = "noreply@example.org"


@pytest.fixture
def server(smtp_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch) -> Server:
    started = smtp_server()
    monkeypatch.setenv("WORKQUEUE_SMTP_URL", f"smtp://127.0.0.1:{started.port}")
    monkeypatch.setenv("WORKQUEUE_SMTP_FROM", SENDER)
    return started


async def test_a_job_through_the_worker_is_delivered_and_completed(
    server: Server, workqueue_worker: WorkerFactory
) -> None:
    wq = await workqueue_worker(plugins=[workqueue_send_email])

    info = await wq.run("send_email", {"to": ["a@example.org", "b@example.org"], "subject": "Hi"})

    assert info.status == "completed" and info.attempts == 1
    assert info.result == {"message_id": f"<workqueue.{info.id}@example.org>", "recipients": 2}
    [received] = server.recorder.messages
    assert received.rcpt_tos == ["a@example.org", "b@example.org"]
    assert received.message["Message-ID"] == info.result["message_id"]


async def test_a_550_fails_the_job_for_good_through_the_worker(
    server: Server, workqueue_worker: WorkerFactory
) -> None:
    server.recorder.data_answer = "550 5.7.1 Message rejected as spam"
    wq = await workqueue_worker(plugins=[workqueue_send_email])

    info = await wq.run("send_email", {"to": "a@example.org", "subject": "x"})

    assert info.status == "failed" and info.attempts == 1  # retries=5, yet no retry
    assert info.error is not None and "message refused: 550 5.7.1" in info.error


async def test_one_attempt_as_the_worker_records_it(server: Server) -> None:
    [job_type] = workqueue_send_email.workqueue_job_types()
    server.recorder.rcpt_answers["b@example.org"] = "450 4.2.1 Mailbox busy"

    busy = await run_job(job_type, {"to": ["a@example.org", "b@example.org"], "subject": "x"})
    assert busy.status == "retrying" and busy.error is not None
    assert "1 of 2 recipients refused" in busy.error
    # the type's backoff: 10 s, half of it jitter
    assert busy.retry_in_seconds is not None and 5.0 <= busy.retry_in_seconds <= 10.0

    invalid = await run_job(job_type, {"to": "not an address", "subject": "x"})
    assert invalid.status == "failed" and invalid.error is not None
    assert invalid.error.startswith("invalid job: payload does not match")
    assert server.recorder.messages == []
