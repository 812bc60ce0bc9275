"""Parsing and checking ``redis+sentinel://`` URLs (no Redis needed)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from workqueue.broker.sentinel_url import parse_sentinel_url
from workqueue.errors import ConfigurationError
from workqueue.log import redact_url


def test_a_full_url() -> None:
    parsed = parse_sentinel_url(
        "redis+sentinel://app:s%40cret@10.0.0.1:26379,sentinel-b,[::1]:26380/mymaster/3"
    )
    assert parsed.tls is False
    assert parsed.sentinels == (("10.0.0.1", 26379), ("sentinel-b", 26379), ("::1", 26380))
    assert parsed.master == "mymaster"
    assert parsed.db == 3
    assert (parsed.username, parsed.password) == ("app", "s@cret")
    assert "s@cret" not in repr(parsed)


def test_defaults_tls_and_sentinel_login() -> None:
    parsed = parse_sentinel_url(
        "rediss+sentinel://:pw@h:1/m?ssl_ca_certs=/ca.pem&sentinel_password=spw"
        "&sentinel_username=watcher"
    )
    assert parsed.tls is True
    assert parsed.db == 0
    assert parsed.username is None
    assert parsed.password == "pw"
    assert (parsed.sentinel_username, parsed.sentinel_password) == ("watcher", "spw")
    assert parsed.tls_options == {"ssl_ca_certs": "/ca.pem"}


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://:topsecret@h:26379", "no master name"),
        ("redis+sentinel://:topsecret@h:26379/", "no master name"),
        ("redis+sentinel://:topsecret@h:99999/m", "bad port '99999'"),
        ("redis+sentinel://:topsecret@h:abc/m", "bad port 'abc'"),
        ("redis+sentinel://:topsecret@h:1,,h:2/m", "an empty Sentinel address"),
        ("redis+sentinel://:topsecret@/m", "no Sentinel address"),
        ("redis+sentinel://:topsecret@h/m/zero", "'zero' is not a number"),
        ("redis+sentinel://:topsecret@h/m/0/extra", "too many path parts"),
        ("redis+sentinel://:topsecret@h/m?ssl_ca_certs=x", "needs rediss+sentinel://"),
        ("redis+sentinel://:topsecret@h/m?password=topsecret", "unknown option 'password'"),
        ("redis+sentinel://:topsecret@::1:5/m", "put an IPv6 address in brackets"),
        ("redis://:topsecret@h/m", "the scheme must be"),
    ],
)
def test_bad_urls_are_named_without_the_password(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_sentinel_url(url)
    assert problem in str(caught.value)
    assert "topsecret" not in str(caught.value)


def test_the_cli_refuses_a_bad_sentinel_url_as_a_usage_error() -> None:
    from workqueue.cli.worker import worker_command

    url = "redis+sentinel://:topsecret@h:26379"
    result = CliRunner().invoke(worker_command, ["--redis-url", url])
    assert result.exit_code == 2
    assert "no master name" in result.output
    assert "topsecret" not in result.output


def test_the_sentinel_password_option_is_redacted() -> None:
    url = "redis+sentinel://:pw@h/m?sentinel_password=spw"
    assert redact_url(url) == "redis+sentinel://:***@h/m?sentinel_password=***"
