"""The built-in plugins through a real worker subprocess: a mail reaches a real SMTP server,
a webhook reaches a real HTTP server signed, and the documented example plugin runs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis_server import free_port
from wq_testkit import WorkerProcs

from workqueue.broker import Broker
from workqueue.client import Client
from workqueue.job import JobInfo
from workqueue.registry import build_registry

pytestmark = pytest.mark.slow


async def finished(client: Client, job_id: str, timeout: float = 20) -> JobInfo:
    deadline = time.monotonic() + timeout
    while True:
        info = await client.get_job(job_id)
        if info.status in ("completed", "failed"):
            return info
        assert time.monotonic() < deadline, f"job stuck in {info.status}"
        await asyncio.sleep(0.05)


def plugin_client(broker: Broker, name: str) -> Client:
    pytest.importorskip(f"workqueue_{name}" if name != "greet" else "workqueue_example_greet")
    return Client(broker, build_registry(only=[name]))


async def test_send_email_job_arrives_with_exact_recipients(
    broker: Broker, workers: WorkerProcs
) -> None:
    controller_mod = pytest.importorskip("aiosmtpd.controller")
    received: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope)
            return "250 OK"

    port = free_port()
    controller = controller_mod.Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        client = plugin_client(broker, "send_email")
        workers.start(
            env={
                "WORKQUEUE_PLUGINS": "send_email",
                "WORKQUEUE_SMTP_URL": f"smtp://127.0.0.1:{port}?starttls=false",
                "WORKQUEUE_SMTP_FROM": "queue@example.org",
            }
        )
        job = await client.enqueue(
            "send_email",
            {
                "to": ["a@example.com"],
                "cc": ["c@example.com"],
                "bcc": ["hidden@example.com"],
                "subject": "testing producer",
                "text": "hello",
            },
        )
        info = await finished(client, job.id)
        assert info.status == "completed", info.error
        (envelope,) = received
        assert sorted(envelope.rcpt_tos) == ["a@example.com", "c@example.com", "hidden@example.com"]
        data = envelope.content.decode()
        assert "Subject: testing producer" in data and "hidden@example.com" not in data
        assert f"workqueue.{job.id}@" in data  # Message-ID from the job id: same on a re-run
    finally:
        controller.stop()


@pytest.fixture
def receiver() -> Iterator[tuple[int, list[tuple[dict[str, str], bytes]]]]:
    got: list[tuple[dict[str, str], bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            got.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], got
    server.shutdown()
    server.server_close()


async def test_webhook_job_arrives_signed(
    broker: Broker, workers: WorkerProcs, receiver: tuple[int, list[Any]]
) -> None:
    port, got = receiver
    key = b"0123456789abcdef0123456789abcdef"
    secret = "whsec_" + base64.b64encode(key).decode()
    client = plugin_client(broker, "http_webhook")
    workers.start(
        env={
            "WORKQUEUE_PLUGINS": "http_webhook",
            "WORKQUEUE_WEBHOOK_SECRET": secret,
            "WORKQUEUE_WEBHOOK_ALLOW": "127.0.0.1",
        }
    )
    job = await client.enqueue(
        "http_webhook", {"url": f"http://127.0.0.1:{port}/hook", "json": {"event": "signup"}}
    )
    info = await finished(client, job.id)
    assert info.status == "completed", info.error
    (headers, body), *_ = got
    assert headers["webhook-id"] == job.id
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert f"v1,{expected}" in headers["webhook-signature"].split()


async def test_the_documented_example_plugin_runs(broker: Broker, workers: WorkerProcs) -> None:
    client = plugin_client(broker, "greet")
    workers.start(env={"WORKQUEUE_PLUGINS": "greet"})
    job = await client.enqueue("greet", {"name": "Ada"})
    info = await finished(client, job.id)
    assert info.status == "completed" and info.result == "hello Ada"
