"""Send one webhook request and judge the answer.

* 2xx: delivered.
* 408, 429, 5xx: retried; with a ``Retry-After`` (seconds or an HTTP date, capped at one hour)
  as :class:`workqueue.RetryLater`, so the next attempt waits exactly that long.
* Network errors and the total timeout: retried (a plain exception, normal backoff).
* 3xx: redirects are never followed (a redirect could lead anywhere, including past the SSRF
  guard): the job fails for good, naming the status.
* Any other status: fails for good.

At most :data:`~.config.MAX_RESPONSE_BYTES` of the response body is read, undecoded; the
rest is dropped with the connection. Error messages carry the status and the kind of failure,
never the URL, headers or body (which may hold secrets).
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpcore
import httpx

from workqueue import PermanentError, RetryLater
from workqueue_http_webhook.config import (
    MAX_RESPONSE_BYTES,
    MAX_RETRY_AFTER_SECONDS,
    MAX_TIMEOUT_SECONDS,
    WebhookConfig,
)
from workqueue_http_webhook.schema import WebhookPayload
from workqueue_http_webhook.signing import signature_headers
from workqueue_http_webhook.transport import GuardedTransport, Resolver, system_resolver

__all__ = [
    "USER_AGENT",
    "Delivery",
    "WebhookRetryableError",
    "deliver",
    "judge",
    "make_client",
    "parse_retry_after",
]

USER_AGENT = "workqueue-http-webhook/0.1"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


class WebhookRetryableError(Exception):
    """Raised when a webhook failed for a reason that may pass (5xx, 408, 429, network, timeout)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """What came back: the status, and how much of the body was read."""

    status: int
    body_bytes_read: int
    body_truncated: bool


def make_client(
    config: WebhookConfig,
    *,
    resolver: Resolver = system_resolver,
    network: httpcore.AsyncNetworkBackend | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    """The shared client: guarded transport, no redirects, no proxies or .netrc from the env.

    ``resolver``, ``network`` and ``ssl_context`` exist for tests (a scripted resolver, a
    recording backend, a private CA); the defaults are the system's.
    """
    transport = GuardedTransport(
        config.policy, resolver=resolver, network=network, ssl_context=ssl_context
    )
    return httpx.AsyncClient(
        transport=transport,
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(MAX_TIMEOUT_SECONDS),
        headers={"user-agent": USER_AGENT, "accept-encoding": "identity"},
    )


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP date), capped at 1 h.

    None when absent or unreadable; 0 for a date in the past.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        seconds = float(int(text[:12]))
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def judge(status: int, headers: httpx.Headers) -> None:
    """Raise the job failure that ``status`` calls for; return for a 2xx."""
    if 200 <= status < 300:
        return
    if 300 <= status < 400:
        raise PermanentError(
            f"redirect not followed: the receiver answered {status}; use the final URL"
        )
    if status in (408, 429) or 500 <= status < 600:
        delay = parse_retry_after(headers.get("retry-after"))
        if delay is not None:
            raise RetryLater(
                f"the receiver answered {status}; retrying after {delay:g} s (Retry-After)", delay
            )
        raise WebhookRetryableError(f"the receiver answered {status}")
    raise PermanentError(f"the receiver answered {status}; not retried")


async def _read_capped(response: httpx.Response) -> tuple[int, bool]:
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read > MAX_RESPONSE_BYTES:
            return MAX_RESPONSE_BYTES, True
    return read, False


def _headers(
    payload: WebhookPayload, body: bytes, message_id: str, keys: tuple[bytes, ...], timestamp: int
) -> dict[str, str]:
    headers = dict(payload.headers)
    content_type = payload.content_type()
    if content_type and not any(name.lower() == "content-type" for name in headers):
        headers["content-type"] = content_type
    headers.update(signature_headers(keys, message_id, timestamp, body))
    return headers


def _describe(exc: Exception) -> str:
    text = _CONTROL.sub(" ", str(exc)).strip()[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def deliver(
    client: httpx.AsyncClient,
    payload: WebhookPayload,
    *,
    message_id: str,
    keys: tuple[bytes, ...] = (),
    timeout_seconds: float,
    clock: Callable[[], float] = time.time,
) -> Delivery:
    """Send ``payload`` once, signed with ``keys``, within ``timeout_seconds`` in total."""
    body = payload.content()
    headers = _headers(payload, body, message_id, keys, int(clock()))
    try:
        async with asyncio.timeout(timeout_seconds):
            async with client.stream(
                payload.method,
                payload.url,
                headers=headers,
                content=body,
                timeout=timeout_seconds,
            ) as response:
                read, truncated = await _read_capped(response)
    except (TimeoutError, httpx.TimeoutException):
        raise WebhookRetryableError(
            f"no complete answer within {timeout_seconds:g} s (timeout)"
        ) from None
    except httpx.TransportError as exc:
        raise WebhookRetryableError(f"network error: {_describe(exc)}") from None
    judge(response.status_code, response.headers)
    return Delivery(response.status_code, read, truncated)
