"""WORKQUEUE_SMTP_* settings."""

from __future__ import annotations

import pytest
from workqueue_send_email.config import SmtpConfig, SmtpConfigError


def config(url: str, **env: str) -> SmtpConfig:
    return SmtpConfig.from_env({"WORKQUEUE_SMTP_URL": url, **env})


def test_plain_smtp_defaults() -> None:
    settings = config("smtp://mail.example.org")

    assert (settings.host, settings.port) == ("mail.example.org", 25)
    assert not settings.implicit_tls
    assert settings.starttls == "auto"
    assert settings.username is None
    assert settings.password is None


def test_credentials_port_and_options() -> None:
    settings = config(
        "smtp://user%40example.org:p%40ss%3Aword@mail.example.org:587"
        "?starttls=true&timeout=7.5&pool_size=4&helo=worker.example.org",
        WORKQUEUE_SMTP_FROM="noreply@example.org",
        WORKQUEUE_SMTP_CA_FILE="/etc/ssl/private-ca.pem",
        WORKQUEUE_SMTP_MAX_RECIPIENTS="10",
    )

    assert settings.port == 587
    assert settings.username == "user@example.org"
    assert settings.password == "p@ss:word"
    assert settings.starttls == "required"
    assert settings.timeout_seconds == 7.5
    assert settings.pool_size == 4
    assert settings.helo_name == "worker.example.org"
    assert settings.default_from == "noreply@example.org"
    assert settings.ca_file == "/etc/ssl/private-ca.pem"
    assert settings.max_recipients == 10


def test_smtps_is_implicit_tls_on_465() -> None:
    settings = config("smtps://mail.example.org")

    assert settings.implicit_tls
    assert settings.port == 465
    assert settings.starttls == "never"


def test_starttls_false_never_upgrades() -> None:
    assert config("smtp://h?starttls=false").starttls == "never"


def test_credentials_make_starttls_required_unless_told_otherwise() -> None:
    assert config("smtp://u:p@h").starttls == "required"
    assert config("smtp://u:p@h?starttls=auto").starttls == "auto"
    assert config("smtp://u:p@h?starttls=false").starttls == "never"
    assert config("smtps://u:p@h").starttls == "never"


def test_the_password_stays_out_of_repr() -> None:
    settings = config("smtp://user:TopSecret@mail.example.org")

    assert "TopSecret" not in repr(settings)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "WORKQUEUE_SMTP_URL is not set"),
        ("http://mail.example.org", "smtp:// or smtps://"),
        ("smtp://", "names no host"),
        ("smtp://user:TopSecret@host:notaport", "not a valid URL"),
        ("smtp://host?starttls=maybe", "starttls must be"),
        ("smtps://host?starttls=true", "already TLS"),
        ("smtp://host?tls=1", "unknown option 'tls'"),
        ("smtp://host?timeout=-1", "above 0"),
        ("smtp://host?pool_size=1.5", "whole number"),
    ],
)
def test_unusable_urls_are_reported_without_the_url(url: str, message: str) -> None:
    with pytest.raises(SmtpConfigError, match=message) as failure:
        config(url)

    assert "TopSecret" not in str(failure.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WORKQUEUE_SMTP_FROM", "Mailer <noreply@example.org>"),
        ("WORKQUEUE_SMTP_MAX_RECIPIENTS", "0"),
        ("WORKQUEUE_SMTP_MAX_RECIPIENTS", "many"),
    ],
)
def test_bad_companion_variables_are_reported(name: str, value: str) -> None:
    with pytest.raises(SmtpConfigError, match=name):
        config("smtp://host", **{name: value})


def test_an_unreadable_ca_file_is_a_configuration_error() -> None:
    settings = config("smtps://host", WORKQUEUE_SMTP_CA_FILE="/nonexistent/ca.pem")

    with pytest.raises(SmtpConfigError, match="WORKQUEUE_SMTP_CA_FILE"):
        settings.tls_context()
