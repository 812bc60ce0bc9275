"""Fixtures: local receivers, a clean environment, and a tripwire under every client."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import trustme
import workqueue_http_webhook
from webhook_testkit import WORKER, Receiver, Tripwire
from workqueue_http_webhook.client import make_client
from workqueue_http_webhook.config import WebhookConfig

ENV_VARIABLES = ("WORKQUEUE_WEBHOOK_SECRET", "WORKQUEUE_WEBHOOK_ALLOW")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def tripwire(monkeypatch: pytest.MonkeyPatch) -> Tripwire:
    """Every client the plugin builds connects through a recording, loopback-only backend."""
    wire = Tripwire()

    def guarded_client(config: WebhookConfig, **options: Any) -> httpx.AsyncClient:
        options.setdefault("network", wire)
        return make_client(config, **options)

    monkeypatch.setattr(workqueue_http_webhook, "make_client", guarded_client)
    return wire


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    """A factory: ``await receivers(host="127.0.0.1", tls=None)`` starts a receiver."""
    started: list[Receiver] = []

    async def start(host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> Receiver:
        receiver = await Receiver(host, tls).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        await receiver.stop()


@pytest.fixture
async def receiver(receivers: Callable[..., Awaitable[Receiver]]) -> Receiver:
    return await receivers()


@pytest.fixture(autouse=True)
async def worker(receivers: Callable[..., Awaitable[Receiver]]) -> AsyncIterator[None]:
    """Close the plugin's shared client after each test, before the receivers stop."""
    yield None
    await workqueue_http_webhook.workqueue_worker_shutdown(WORKER)


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()
