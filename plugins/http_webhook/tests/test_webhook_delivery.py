"""http_webhook against real HTTP receivers on loopback (WORKQUEUE_WEBHOOK_ALLOW opens them)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import msgspec
import pytest
import trustme
import workqueue_http_webhook
from webhook_testkit import (
    WORKER,
    Receiver,
    Reply,
    Tripwire,
    make_context,
    new_secret,
    payload,
    verify,
)
from workqueue_http_webhook import WebhookRetryableError, http_webhook
from workqueue_http_webhook.client import deliver, make_client
from workqueue_http_webhook.config import MAX_RESPONSE_BYTES, WebhookConfig

from workqueue import PermanentError, RetryLater

SECRET = new_secret(b"first")
ROTATED = new_secret(b"second")


@pytest.fixture(autouse=True)
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKQUEUE_WEBHOOK_ALLOW", "127.0.0.1")


async def run(fields: dict[str, object], job_id: str = "msg_job-1", attempt: int = 1) -> object:
    return await http_webhook(payload(**fields), make_context(job_id, attempt))


# ---------------------------------------------------------------------------------------------
# Delivery and signatures
# ---------------------------------------------------------------------------------------------


async def test_a_signed_delivery_verifies_against_exactly_the_bytes_sent(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a signing secret
    monkeypatch.setenv("WORKQUEUE_WEBHOOK_SECRET", SECRET)
    await workqueue_http_webhook.workqueue_worker_startup(WORKER)

    # When a JSON webhook is delivered
    result = await run(
        {
            "url": receiver.url("/hooks/orders?tenant=7"),
            "json": {"order": 42, "items": ["a", "b"], "note": "naïve"},
            "headers": {"X-Tenant": "7", "Authorization": "Bearer abc"},
        },
        job_id="msg_2WdVx",
    )

    # Then the receiver can verify it the Standard Webhooks way
    [request] = receiver.requests
    assert result == {"status": 200}
    assert request.method == "POST"
    assert request.target == "/hooks/orders?tenant=7"
    assert request.body == msgspec.json.encode({"order": 42, "items": ["a", "b"], "note": "naïve"})
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-tenant"] == "7"
    assert request.headers["authorization"] == "Bearer abc"
    assert request.headers["webhook-id"] == "msg_2WdVx"
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 5
    assert request.headers["webhook-signature"].startswith("v1,")
    assert verify(SECRET, request.headers, request.body)
    # and a body changed in transit does not verify
    assert not verify(SECRET, request.headers, request.body.replace(b"42", b"43"))
    assert not verify(ROTATED, request.headers, request.body)


async def test_during_rotation_two_signatures_each_verify(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKQUEUE_WEBHOOK_SECRET", f"{ROTATED} {SECRET}")

    await run({"url": receiver.url(), "body": "plain text body"})

    [request] = receiver.requests
    signatures = request.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    for secret, signature in zip((ROTATED, SECRET), signatures, strict=True):
        assert verify(secret, {**request.headers, "webhook-signature": signature}, request.body)
    assert request.headers["content-type"] == "text/plain; charset=utf-8"


async def test_without_a_secret_no_signature_headers_are_sent(receiver: Receiver) -> None:
    await run({"url": receiver.url(), "method": "get"})

    [request] = receiver.requests
    assert request.method == "GET"
    assert not any(name.startswith("webhook-") for name in request.headers)


async def test_the_payload_content_type_wins(receiver: Receiver) -> None:
    await run(
        {"url": receiver.url(), "body": "<x/>", "headers": {"Content-Type": "application/xml"}}
    )

    assert receiver.requests[0].headers["content-type"] == "application/xml"


async def test_a_retry_after_500_keeps_the_id_and_signs_a_new_timestamp(
    receiver: Receiver,
) -> None:
    # Given a receiver that fails once
    receiver.replies = [Reply(status=500), Reply(status=204)]
    keys = WebhookConfig.from_env({"WORKQUEUE_WEBHOOK_SECRET": SECRET}).keys
    client = make_client(
        WebhookConfig.from_env({"WORKQUEUE_WEBHOOK_ALLOW": "127.0.0.1"}), network=Tripwire()
    )
    job = payload(url=receiver.url(), json={"n": 1})
    try:
        # When attempt 1 gets a 500 it is a plain, retried failure
        with pytest.raises(WebhookRetryableError, match="answered 500") as failure:
            await deliver(
                client,
                job,
                message_id="msg_7",
                keys=keys,
                timeout_seconds=5,
                clock=lambda: 1_700_000_000.0,
            )
        assert not isinstance(failure.value, PermanentError | RetryLater)

        # and attempt 2 succeeds
        delivery = await deliver(
            client,
            job,
            message_id="msg_7",
            keys=keys,
            timeout_seconds=5,
            clock=lambda: 1_700_000_031.0,
        )
    finally:
        await client.aclose()

    # Then both carried the same webhook-id, each its own timestamp, and both verify
    first, second = receiver.requests
    assert delivery.status == 204
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == "msg_7"
    assert first.headers["webhook-timestamp"] == "1700000000"
    assert second.headers["webhook-timestamp"] == "1700000031"
    assert verify(SECRET, first.headers, first.body)
    assert verify(SECRET, second.headers, second.body)


async def test_the_handler_retries_a_500_with_a_plain_exception(receiver: Receiver) -> None:
    receiver.replies = [Reply(status=500)]

    with pytest.raises(WebhookRetryableError) as failure:
        await run({"url": receiver.url()})

    assert not isinstance(failure.value, PermanentError)


async def test_consecutive_jobs_reuse_one_connection(receiver: Receiver) -> None:
    await workqueue_http_webhook.workqueue_worker_startup(WORKER)

    for number in range(3):
        await run({"url": receiver.url(), "json": number}, job_id=f"j{number}")

    assert len(receiver.requests) == 3
    assert receiver.connections == 1


# ---------------------------------------------------------------------------------------------
# Which answers retry
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retry_after", "expected_delay"),
    [
        (429, "7", 7.0),
        (503, "0", 0.0),
        (408, "30", 30.0),
        (429, "86400", 3600.0),  # capped at one hour
    ],
)
async def test_retry_after_seconds_becomes_retry_later(
    receiver: Receiver, status: int, retry_after: str, expected_delay: float
) -> None:
    receiver.replies = [Reply(status=status, headers={"Retry-After": retry_after})]

    with pytest.raises(RetryLater) as failure:
        await run({"url": receiver.url()})

    assert failure.value.delay_seconds == expected_delay
    assert not isinstance(failure.value, PermanentError)


async def test_retry_after_as_an_http_date(receiver: Receiver) -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    receiver.replies = [
        Reply(status=429, headers={"Retry-After": format_datetime(when, usegmt=True)})
    ]

    with pytest.raises(RetryLater) as failure:
        await run({"url": receiver.url()})

    assert 115 <= failure.value.delay_seconds <= 121


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_retryable_statuses_without_retry_after_use_normal_backoff(
    receiver: Receiver, status: int
) -> None:
    receiver.replies = [Reply(status=status, headers={"Retry-After": "soon"})]

    with pytest.raises(WebhookRetryableError, match=str(status)):
        await run({"url": receiver.url()})


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
async def test_other_4xx_fail_for_good(receiver: Receiver, status: int) -> None:
    receiver.replies = [Reply(status=status)]

    with pytest.raises(PermanentError, match=f"answered {status}; not retried"):
        await run({"url": receiver.url()})


async def test_a_redirect_is_not_followed(
    receivers: Callable[..., Awaitable[Receiver]],
) -> None:
    # Given a receiver that redirects to another loopback server
    receiver = await receivers()
    target = await receivers()
    receiver.replies = [Reply(status=302, headers={"Location": target.url("/internal")})]

    with pytest.raises(PermanentError, match="redirect not followed"):
        await run({"url": receiver.url()})

    assert target.connections == 0


async def test_connection_refused_is_retried(tripwire: Tripwire) -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()

    with pytest.raises(WebhookRetryableError, match="network error"):
        await run({"url": f"http://127.0.0.1:{port}/"})


async def test_error_messages_hold_no_url_or_header_values(receiver: Receiver) -> None:
    receiver.replies = [Reply(status=500, body=b"internal: token=abc")]

    with pytest.raises(WebhookRetryableError) as failure:
        await run(
            {
                "url": receiver.url("/hooks/sk_live_PATHSECRET?key=QUERYSECRET"),
                "headers": {"Authorization": "Bearer HEADERSECRET"},
            }
        )

    message = str(failure.value)
    for secret in ("PATHSECRET", "QUERYSECRET", "HEADERSECRET", "token=abc"):
        assert secret not in message


# ---------------------------------------------------------------------------------------------
# Hostile receivers: tarpits and huge answers
# ---------------------------------------------------------------------------------------------


async def test_a_tarpit_hits_the_total_timeout_and_is_retried(receiver: Receiver) -> None:
    # Given a receiver that answers one byte per second
    receiver.replies = [Reply(kind="tarpit")]
    loop = asyncio.get_running_loop()
    started = loop.time()

    # When the payload allows 1.5 s in total
    with pytest.raises(WebhookRetryableError, match=r"within 1\.5 s") as failure:
        await run({"url": receiver.url(), "timeout": 1.5})

    # Then it gives up on time, as a retried failure
    assert 1.4 <= loop.time() - started < 3.0
    assert not isinstance(failure.value, PermanentError)


async def test_the_job_timeout_bounds_the_request_timeout(receiver: Receiver) -> None:
    receiver.replies = [Reply(kind="tarpit")]

    with pytest.raises(WebhookRetryableError, match="within 1 s"):
        await http_webhook(payload(url=receiver.url(), timeout=30), make_context(timeout=1.0))


async def test_a_1_mib_response_is_read_only_up_to_the_cap(receiver: Receiver) -> None:
    receiver.replies = [Reply(body=b"y" * (1024 * 1024))]
    client = make_client(
        WebhookConfig.from_env({"WORKQUEUE_WEBHOOK_ALLOW": "127.0.0.1"}), network=Tripwire()
    )
    try:
        delivery = await deliver(
            client, payload(url=receiver.url()), message_id="m", timeout_seconds=5
        )
    finally:
        await client.aclose()

    assert delivery.status == 200
    assert delivery.body_truncated
    assert delivery.body_bytes_read == MAX_RESPONSE_BYTES == 64 * 1024


async def test_an_endless_response_is_cut_off_quickly(receiver: Receiver) -> None:
    # Given a receiver that would stream 512 MiB
    receiver.replies = [Reply(kind="stream", stream_bytes=512 * 1024 * 1024)]
    loop = asyncio.get_running_loop()
    started = loop.time()

    result = await run({"url": receiver.url()})

    # Then the job is done long before that, having made the receiver stop early
    assert result == {"status": 200}
    assert loop.time() - started < 5
    for _ in range(100):
        if not receiver._tasks:
            break
        await asyncio.sleep(0.02)
    assert receiver.bytes_sent < 64 * 1024 * 1024


# ---------------------------------------------------------------------------------------------
# HTTPS: the connection goes to the checked IP, Host and SNI stay the name
# ---------------------------------------------------------------------------------------------


async def test_https_keeps_the_host_name_for_sni_host_and_certificate(
    receivers: Callable[..., Awaitable[Receiver]],
    ca: trustme.CA,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given an HTTPS receiver whose certificate names only "localhost"
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_tls)
    receiver = await receivers(tls=server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    tripwire = Tripwire()
    client = make_client(
        WebhookConfig.from_env({"WORKQUEUE_WEBHOOK_ALLOW": "localhost"}),
        network=tripwire,
        ssl_context=client_tls,
    )
    try:
        delivery = await deliver(
            client,
            payload(url=receiver.url(host="localhost"), json={}),
            message_id="m",
            timeout_seconds=5,
        )
    finally:
        await client.aclose()

    # Then TCP went to the resolved address, TLS and HTTP named the host
    assert delivery.status == 200
    assert ("127.0.0.1", receiver.port) in tripwire.attempts
    assert receiver.server_names == ["localhost"]
    assert receiver.requests[0].headers["host"] == f"localhost:{receiver.port}"
