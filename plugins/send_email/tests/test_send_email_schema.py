"""Payload validation at enqueue: what the producer's ``msgspec.convert`` accepts and rejects."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import msgspec
import pytest
import workqueue_send_email
from workqueue_send_email import EmailPayload
from workqueue_send_email.message import build_message, message_id_for

from workqueue import JobType, PayloadValidationError
from workqueue.registry import build_registry


def convert(**fields: Any) -> EmailPayload:
    return msgspec.convert(fields, EmailPayload)


def test_the_seed_example_is_valid() -> None:
    job = convert(to="someone@example.com", subject="testing producer")

    assert job.to == ["someone@example.com"]
    assert job.text is None
    assert job.html is None
    assert job.recipients() == ["someone@example.com"]


def test_every_field_is_accepted() -> None:
    job = convert(
        to=["a@example.org", "b@example.org"],
        subject="Hi",
        text="plain",
        html="<p>html</p>",
        cc="c@example.org",
        bcc=["d@example.org"],
        reply_to="r@example.org",
        **{"from": "me@example.org"},
    )

    assert job.from_ == "me@example.org"
    assert job.recipients() == ["a@example.org", "b@example.org", "c@example.org", "d@example.org"]


def test_a_recipient_listed_twice_is_sent_to_once() -> None:
    job = convert(to=["a@example.org"], cc="A@example.org", bcc="a@example.org", subject="x")

    assert job.recipients() == ["a@example.org"]


@pytest.mark.parametrize(
    "subject",
    [
        "Hi\r\nBcc: evil@x",
        "Hi\nBcc: evil@x",
        "Hi\rBcc: evil@x",
        "trailing newline\n",
        "Hi=?UTF-8?Q?=0A?=Bcc: evil@x",
        "Hi =?UTF-8?Q?=0D=0A?= Bcc: evil@x",
        "Hi =?utf-8?b?Cg==?= Bcc: evil@x",
        "Hi =?utf-8?B?DQpCY2M6IGV2aWxAeA==?=",
        "nul\x00byte",
        "tab\tseparated",
        "line\u2028separator",
        "next\x85line",
    ],
)
def test_line_breaks_in_the_subject_are_rejected(subject: str) -> None:
    with pytest.raises(msgspec.ValidationError, match="subject"):
        convert(to="a@example.org", subject=subject)


def test_a_harmless_encoded_word_is_allowed() -> None:
    assert convert(to="a@example.org", subject="=?utf-8?q?caf=C3=A9?=").subject


@pytest.mark.parametrize(
    "address",
    [
        "a@x, evil@y",
        "a@example.org,evil@example.org",
        "a@example.org;evil@example.org",
        "alice@example.org(<bob@example.com>",
        "Alice <alice@example.org>",
        "<alice@example.org>",
        '"alice"@example.org',
        "alice@example.org (comment)",
        "alice@example.org\r\nBcc: evil@example.org",
        "alice@example.org\n",
        "=?utf-8?q?=0A?=@example.org",
        "alice",
        "@example.org",
        "alice@",
        "alice@@example.org",
        "al..ice@example.org",
        ".alice@example.org",
        "alice@-example.org",
        "alice@example..org",
        "alice@[127.0.0.1]",
        "alice@127.0.0.1",
        "ålice@example.org",
        "a" * 65 + "@example.org",
        "group: a@example.org;",
    ],
)
@pytest.mark.parametrize("field", ["to", "cc", "bcc", "reply_to", "from"])
def test_anything_but_a_plain_address_is_rejected(field: str, address: str) -> None:
    fields: dict[str, Any] = {"to": "ok@example.org", "subject": "x", field: address}

    with pytest.raises(msgspec.ValidationError):
        convert(**fields)


def test_a_bad_address_inside_a_list_is_named_by_position() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"cc\[1\]"):
        convert(to="a@example.org", subject="x", cc=["b@example.org", "a@x, evil@y"])


def test_error_messages_do_not_repeat_the_value() -> None:
    with pytest.raises(msgspec.ValidationError) as failure:
        convert(to="secret.person@example.org, x@y", subject="x")

    assert "secret.person" not in str(failure.value)


def test_at_least_one_to_recipient_is_required() -> None:
    with pytest.raises(msgspec.ValidationError, match="to"):
        convert(to=[], subject="x", bcc="a@example.org")


@pytest.mark.parametrize(
    "fields",
    [
        {"subject": "no recipient"},
        {"to": "a@example.org"},
        {"to": 42, "subject": "x"},
        {"to": "a@example.org", "subject": "x", "text": 3},
        {"to": "a@example.org", "subject": "x", "body_html": "<p>typo</p>"},
        {"to": "a@example.org", "subject": "x" * 999},
    ],
)
def test_malformed_payloads_are_rejected(fields: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(fields, EmailPayload)


def test_the_default_recipient_cap_is_50() -> None:
    addresses = [f"user{n}@example.org" for n in range(50)]
    assert len(convert(to=addresses[:25], cc=addresses[25:], subject="x").recipients()) == 50

    with pytest.raises(msgspec.ValidationError, match="more than 50 recipients"):
        convert(to=addresses, bcc="one-more@example.org", subject="x")


def test_a_thousand_recipients_are_rejected() -> None:
    with pytest.raises(msgspec.ValidationError, match="recipients"):
        convert(to=[f"user{n}@example.org" for n in range(1000)], subject="x")


def test_the_cap_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKQUEUE_SMTP_MAX_RECIPIENTS", "2")

    with pytest.raises(msgspec.ValidationError, match="more than 2 recipients"):
        convert(to=["a@example.org", "b@example.org"], cc="c@example.org", subject="x")


def test_a_malformed_cap_setting_falls_back_to_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKQUEUE_SMTP_MAX_RECIPIENTS", "lots")

    assert convert(to=[f"u{n}@example.org" for n in range(50)], subject="x")


def test_the_built_message_has_no_bcc_header() -> None:
    job = convert(to="a@example.org", bcc="hidden@example.org", subject="x")

    data = build_message(job, sender="me@example.org", message_id="<id@example.org>")

    assert b"hidden" not in data
    assert b"\r\nBcc:" not in data
    assert data.startswith(b"From: me@example.org\r\nTo: a@example.org\r\n")


def test_message_ids_depend_only_on_the_job_id() -> None:
    assert message_id_for("abc-123", "example.org") == "<workqueue.abc-123@example.org>"
    odd = message_id_for("a b>c", "example.org")
    assert odd == message_id_for("a b>c", "example.org")
    assert " " not in odd
    assert odd.count(">") == 1


def test_the_plugin_registers_send_email_with_its_schema() -> None:
    [job_type] = workqueue_send_email.workqueue_job_types()

    assert isinstance(job_type, JobType)
    assert job_type.name == "send_email"
    assert job_type.payload_schema is EmailPayload


def test_the_entry_point_is_installed() -> None:
    [entry] = [ep for ep in entry_points(group="workqueue") if ep.name == "send_email"]

    assert entry.value == "workqueue_send_email"
    assert entry.load() is workqueue_send_email


def test_the_core_validates_payloads_through_the_plugin() -> None:
    # The producer's own path: the installed entry point, the registry, strict validation
    registry = build_registry(only=["send_email"])

    job = registry.validate_payload(
        "send_email", {"to": "someone@example.com", "subject": "testing producer"}
    )
    with pytest.raises(PayloadValidationError, match="subject"):
        registry.validate_payload(
            "send_email", {"to": "a@example.org", "subject": "Hi=?UTF-8?Q?=0A?=Bcc: evil@x"}
        )

    assert isinstance(job, EmailPayload)
