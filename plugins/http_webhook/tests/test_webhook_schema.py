"""Payload validation at enqueue, signing keys, Retry-After parsing, registration."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib.metadata import entry_points
from typing import Any

import httpx
import msgspec
import pytest
import workqueue_http_webhook
from webhook_testkit import new_secret, verify
from workqueue_http_webhook import WebhookPayload
from workqueue_http_webhook.client import judge, parse_retry_after
from workqueue_http_webhook.config import WebhookConfig, WebhookConfigError, effective_timeout
from workqueue_http_webhook.signing import parse_secrets, signature_headers

from workqueue import JobType, PayloadValidationError, PermanentError, RetryLater
from workqueue.registry import build_registry

URL = "https://hooks.example.com/in"


def convert(**fields: Any) -> WebhookPayload:
    return msgspec.convert(fields, WebhookPayload)


def test_a_minimal_payload_is_a_post_without_body() -> None:
    job = convert(url=URL)

    assert job.method == "POST"
    assert job.headers == {}
    assert job.content() == b""
    assert job.content_type() is None


def test_json_is_encoded_compactly_and_null_is_a_body() -> None:
    assert convert(url=URL, json={"a": [1, 2]}).content() == b'{"a":[1,2]}'
    assert convert(url=URL, json=None).content() == b"null"
    assert convert(url=URL, body="é").content() == "é".encode()


@pytest.mark.parametrize("method", ["get", "POST", "Put", "patch", "DELETE"])
def test_methods_are_case_insensitive(method: str) -> None:
    assert convert(url=URL, method=method).method == method.upper()


@pytest.mark.parametrize(
    "headers",
    [
        {"X-A": "b\r\nX-Injected: 1"},
        {"X-A": "b\nX-Injected: 1"},
        {"X-A": "b\rX-Injected: 1"},
        {"X-A": "nul\x00"},
        {"X-A\r\nX-Injected": "1"},
        {"X-A: b": "c"},
        {"X A": "b"},
        {"": "b"},
        {"Host": "internal.example"},
        {"host": "internal.example"},
        {"Content-Length": "0"},
        {"Connection": "close"},
        {"Keep-Alive": "timeout=5"},
        {"Transfer-Encoding": "chunked"},
        {"TE": "trailers"},
        {"Trailer": "X-B"},
        {"Upgrade": "websocket"},
        {"Proxy-Authorization": "Basic eA=="},
        {"Proxy-Connection": "keep-alive"},
        {"webhook-signature": "v1,forged"},
        {"Webhook-Id": "other"},
        {"X-A": "1", "x-a": "2"},
        {"X-A": "naïve"},
        {"X-A": " padded"},
        {f"X-{n}": "v" for n in range(65)},
    ],
)
def test_header_injection_and_forbidden_headers_are_rejected(headers: dict[str, str]) -> None:
    with pytest.raises(msgspec.ValidationError, match="headers"):
        convert(url=URL, headers=headers)


def test_ordinary_headers_are_accepted() -> None:
    headers = {"Authorization": "Bearer t0k3n", "X-Request-Id": "abc", "Content-Type": "a/b"}

    assert convert(url=URL, headers=headers).headers == headers


@pytest.mark.parametrize(
    "fields",
    [
        {"url": URL, "json": {"a": 1}, "body": "b"},
        {"url": URL, "method": "TRACE"},
        {"url": URL, "method": "CONNECT"},
        {"url": URL, "timeout": 0},
        {"url": URL, "timeout": -1},
        {"url": URL, "timeout": float("nan")},
        {"url": URL, "timeout": float("inf")},
        {"url": URL, "timeout": "10"},
        {"url": URL, "headers": {"X-A": 1}},
        {"url": URL, "follow_redirects": True},
        {"method": "POST"},
        {"url": 42},
    ],
)
def test_malformed_payloads_are_rejected(fields: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(fields, WebhookPayload)


def test_timeouts_are_capped() -> None:
    assert effective_timeout(None, 300) == 30
    assert effective_timeout(5, 300) == 5
    assert effective_timeout(10_000, 300) == 120
    assert effective_timeout(60, 20) == 20


# ---------------------------------------------------------------------------------------------
# Signing keys
# ---------------------------------------------------------------------------------------------


def test_signature_headers_match_the_specification() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'

    headers = signature_headers(
        parse_secrets(secret), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body
    )

    # the example from the Standard Webhooks specification
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert verify(secret, headers, body)


def test_no_secret_means_no_signature_headers() -> None:
    assert signature_headers((), "m", 1, b"") == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with 'whsec_'"),
        ("whsec_not*base64", "not valid base64"),
        ("whsec_c2hvcnQ=", "shorter than 16 bytes"),
        (f"{new_secret(b'x')} whsec_", "secret 2"),
    ],
)
def test_bad_secrets_are_named_by_position_not_by_value(value: str, message: str) -> None:
    with pytest.raises(WebhookConfigError, match=message) as failure:
        WebhookConfig.from_env({"WORKQUEUE_WEBHOOK_SECRET": value})

    assert "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" not in str(failure.value)


def test_keys_stay_out_of_repr() -> None:
    config = WebhookConfig.from_env({"WORKQUEUE_WEBHOOK_SECRET": new_secret(b"k")})

    assert "keys" not in repr(config)


# ---------------------------------------------------------------------------------------------
# Retry-After and status classes
# ---------------------------------------------------------------------------------------------


NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("0", 0.0),
        ("99999999999999999999", 3600.0),
        ("Thu, 01 Jan 2026 12:01:30 GMT", 90.0),
        ("Thu, 01 Jan 2026 11:00:00 GMT", 0.0),
        ("Fri, 02 Jan 2026 12:00:00 GMT", 3600.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
    ],
)
def test_retry_after_values(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


def test_status_classes() -> None:
    judge(200, httpx.Headers())
    judge(299, httpx.Headers())
    with pytest.raises(PermanentError, match="redirect not followed"):
        judge(301, httpx.Headers({"Location": "http://127.0.0.1/"}))
    with pytest.raises(RetryLater):
        judge(503, httpx.Headers({"Retry-After": "1"}))
    with pytest.raises(PermanentError):
        judge(404, httpx.Headers({"Retry-After": "1"}))


# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------


def test_the_plugin_registers_http_webhook_with_its_schema() -> None:
    [job_type] = workqueue_http_webhook.workqueue_job_types()

    assert isinstance(job_type, JobType)
    assert job_type.name == "http_webhook"
    assert job_type.payload_schema is WebhookPayload
    assert job_type.timeout > 120  # the request's own timeout fires first


def test_the_entry_point_is_installed() -> None:
    [entry] = [ep for ep in entry_points(group="workqueue") if ep.name == "http_webhook"]

    assert entry.value == "workqueue_http_webhook"
    assert entry.load() is workqueue_http_webhook


def test_the_core_validates_payloads_through_the_plugin() -> None:
    # The producer's own path: the installed entry point, the registry, strict validation
    registry = build_registry(only=["http_webhook"])

    job = registry.validate_payload("http_webhook", {"url": URL, "json": {"a": 1}, "timeout": 10})
    with pytest.raises(PayloadValidationError, match="headers"):
        registry.validate_payload(
            "http_webhook", {"url": URL, "headers": {"X-A": "b\r\nX-Injected: 1"}}
        )

    assert isinstance(job, WebhookPayload)
