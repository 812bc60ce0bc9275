"""WorkQueue plugin: the ``http_webhook`` job type.

Sends one HTTP request per job through a shared ``httpx.AsyncClient`` whose transport refuses
private, loopback and metadata destinations at connect time (:mod:`.transport`, :mod:`.ssrf`),
signs it with the Standard Webhooks scheme when ``WORKQUEUE_WEBHOOK_SECRET`` is set
(:mod:`.signing`), and maps the answer to success, retry or permanent failure (:mod:`.client`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any

import httpx
import msgspec

from workqueue import Backoff, JobContext, JobType, PermanentError, WorkerInfo, hookimpl
from workqueue_http_webhook.client import WebhookRetryableError, deliver, make_client
from workqueue_http_webhook.config import WebhookConfig, WebhookConfigError, effective_timeout
from workqueue_http_webhook.schema import WebhookPayload
from workqueue_http_webhook.ssrf import DestinationRefused

__all__ = [
    "DestinationRefused",
    "WebhookConfigError",
    "WebhookPayload",
    "WebhookRetryableError",
    "http_webhook",
    "workqueue_job_types",
    "workqueue_worker_shutdown",
    "workqueue_worker_startup",
]

__version__ = "0.1.0"

JOB_TYPE = "http_webhook"


class _Runtime:
    """The worker's settings and shared client: made by the startup hook, or on first use."""

    def __init__(self) -> None:
        self.config: WebhookConfig | None = None
        self.client: httpx.AsyncClient | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        await self.stop()
        # A bad setting does not stop the worker (other job types still run); each
        # http_webhook job then fails for good with the configuration error.
        with contextlib.suppress(WebhookConfigError):
            self._build()

    async def stop(self) -> None:
        client, self.client, self.config = self.client, None, None
        if client is not None and self.loop is asyncio.get_running_loop():
            await client.aclose()
        self.loop = None

    def current(self) -> tuple[WebhookConfig, httpx.AsyncClient]:
        if (
            self.config is None
            or self.client is None
            or self.loop is not asyncio.get_running_loop()
        ):
            self._build()
        assert self.config is not None
        assert self.client is not None
        return self.config, self.client

    def _build(self) -> None:
        config = WebhookConfig.from_env()
        self.config, self.client = config, make_client(config)
        self.loop = asyncio.get_running_loop()


_runtime = _Runtime()


async def http_webhook(payload: WebhookPayload | dict[str, Any], ctx: JobContext) -> dict[str, int]:
    """Deliver ``payload``; return ``{"status": <HTTP status>}`` for a 2xx answer."""
    if not isinstance(payload, WebhookPayload):
        try:
            payload = msgspec.convert(payload, WebhookPayload)
        except msgspec.ValidationError as exc:
            raise PermanentError(f"invalid http_webhook payload: {exc}") from None
    config, client = _runtime.current()
    delivery = await deliver(
        client,
        payload,
        message_id=ctx.job_id,
        keys=config.keys,
        timeout_seconds=effective_timeout(payload.timeout, ctx.timeout),
    )
    ctx.logger.debug("webhook receiver answered {}", delivery.status)
    return {"status": delivery.status}


@hookimpl
def workqueue_job_types() -> list[JobType]:
    """Register ``http_webhook``."""
    return [
        JobType(
            name=JOB_TYPE,
            handler=http_webhook,
            payload_schema=WebhookPayload,
            retries=5,
            timeout=150.0,
            backoff=Backoff(base_seconds=5.0, factor=3.0, max_seconds=3600.0),
            description="Send an HTTP request (Standard Webhooks signature when configured).",
        )
    ]


@hookimpl
def workqueue_worker_startup(worker: WorkerInfo) -> Awaitable[None]:
    """Read the settings and open this worker's shared HTTP client."""
    return _runtime.start()


@hookimpl
def workqueue_worker_shutdown(worker: WorkerInfo) -> Awaitable[None]:
    """Close the shared HTTP client and its pooled connections."""
    return _runtime.stop()
