"""Fixtures: a real SMTP server (aiosmtpd) on a free loopback port, TLS material, clean env."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
import workqueue_send_email
from aiosmtpd.controller import Controller
from smtp_testkit import WORKER, Recorder, Server, free_port

ENV_VARIABLES = (
    "WORKQUEUE_SMTP_URL",
    "WORKQUEUE_SMTP_FROM",
    "WORKQUEUE_SMTP_CA_FILE",
    "WORKQUEUE_SMTP_MAX_RECIPIENTS",
)


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., Server]]:
    """A factory: ``smtp_server(**aiosmtpd_options)`` starts a server and returns it."""
    started: list[Controller] = []

    def start(*, ssl_context: ssl.SSLContext | None = None, **options: Any) -> Server:
        recorder = Recorder()
        port = free_port()
        controller = Controller(
            recorder, hostname="127.0.0.1", port=port, ssl_context=ssl_context, **options
        )
        controller.start()
        import sys

        print("SERVERPORT", port, file=sys.stderr)
        started.append(controller)
        return Server(port=port, recorder=recorder, controller=controller)

    yield start
    for controller in started:
        controller.stop(no_assert=True)


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
async def worker(smtp_server: Callable[..., Server]) -> AsyncIterator[None]:
    """Run the worker shutdown hook after every test (tests start it once the env is set).

    It depends on ``smtp_server`` so that it closes the pooled connections before the servers
    stop.
    """
    yield None
    await workqueue_send_email.workqueue_worker_shutdown(WORKER)
