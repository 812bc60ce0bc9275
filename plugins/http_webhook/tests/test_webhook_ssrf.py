"""The SSRF guard: refused destinations never see a connection; the allow-list opens exceptions."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable

import msgspec
import pytest
from webhook_testkit import Receiver, Tripwire, make_context, payload
from workqueue_http_webhook import DestinationRefused, WebhookPayload, http_webhook
from workqueue_http_webhook.client import deliver, make_client
from workqueue_http_webhook.config import WebhookConfig
from workqueue_http_webhook.ssrf import DestinationPolicy, blocked_reason, parse_ip_literal

from workqueue import PermanentError


@pytest.fixture
async def listeners(
    receivers: Callable[..., Awaitable[Receiver]],
) -> tuple[Receiver, Receiver]:
    """A receiver on 127.0.0.1 and one on [::1] (each on its own free port)."""
    v4 = await receivers("127.0.0.1")
    v6 = await receivers("::1")
    return v4, v6


def refused_urls(port: int, v6_port: int) -> list[str]:
    return [
        f"http://127.0.0.1:{port}/",
        f"http://127.0.0.2:{port}/",
        f"http://2130706433:{port}/",
        f"http://0x7f.1:{port}/",
        f"http://0x7f000001:{port}/",
        f"http://127.1:{port}/",
        f"http://127.0.0.1.:{port}/",
        f"http://localhost:{port}/",
        f"http://LOCALHOST:{port}/",
        f"http://0.0.0.0:{port}/",
        f"http://0:{port}/",
        f"http://[::1]:{v6_port}/",
        f"http://[::ffff:127.0.0.1]:{port}/",
        f"http://[::ffff:7f00:1]:{port}/",
        f"http://[64:ff9b::7f00:1]:{port}/",
        f"http://[2002:7f00:1::1]:{port}/",
        f"http://[::]:{port}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "http://168.63.129.16/",
        "http://100.64.0.1/",
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://169.254.1.1/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://224.0.0.1/",
        "http://[ff02::1]/",
        "http://255.255.255.255/",
        "http://240.0.0.1/",
        "http://198.18.0.1/",
        "http://192.0.2.1/",
        "http://[2001:db8::1]/",
        "http://[2001::1]/",
        "https://127.0.0.1/",
    ]


async def test_every_refused_destination_fails_for_good_without_a_connection(
    listeners: tuple[Receiver, Receiver], tripwire: Tripwire
) -> None:
    v4, v6 = listeners
    urls = refused_urls(v4.port, v6.port)

    for url in urls:
        with pytest.raises(DestinationRefused, match="destination not allowed") as failure:
            await http_webhook(payload(url=url), make_context())
        assert isinstance(failure.value, PermanentError), url

    assert tripwire.attempts == []
    assert v4.connections == 0
    assert v6.connections == 0


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/_HELO",
        "ftp://example.com/",
        "dict://127.0.0.1:11211/",
        "http://user:pass@example.com/",
        "http://user@example.com/",
        "http://0177.0.0.1/",
        "http:///nohost",
        "http://exa mple.com/",
        "http://example.com/\r\nX-Injected: 1",
        "//example.com/",
        "example.com",
    ],
)
def test_urls_refused_at_enqueue(url: str) -> None:
    with pytest.raises(msgspec.ValidationError, match="url"):
        msgspec.convert({"url": url}, WebhookPayload)


async def test_validation_happens_at_connect_time_not_only_at_enqueue(
    listeners: tuple[Receiver, Receiver], tripwire: Tripwire, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A job validated while the allow-list held 127.0.0.1, run by a worker whose list does not
    job = payload(url=listeners[0].url())
    monkeypatch.setenv("WORKQUEUE_WEBHOOK_ALLOW", "10.1.2.3")

    with pytest.raises(DestinationRefused):
        await http_webhook(job, make_context())

    assert tripwire.attempts == []
    assert listeners[0].connections == 0


class ScriptedResolver:
    """Answers from a script, one answer per call, and counts the calls."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


async def test_dns_rebinding_cannot_swap_the_checked_address(
    listeners: tuple[Receiver, Receiver],
) -> None:
    # Given a name whose first answer is public and whose later answers are 127.0.0.1
    resolver = ScriptedResolver(["93.184.215.14"], ["127.0.0.1"])
    tripwire = Tripwire()
    client = make_client(WebhookConfig(), resolver=resolver, network=tripwire)
    try:
        # When the webhook is sent, the connection goes to the address that was checked
        # (the tripwire stands in for the public internet and refuses it)
        with pytest.raises(Exception, match="network error"):
            await deliver(
                client,
                payload(url=f"http://rebind.example:{listeners[0].port}/"),
                message_id="m",
                timeout_seconds=5,
            )
    finally:
        await client.aclose()

    # Then the name was resolved once, and 127.0.0.1 never saw a connection
    assert resolver.calls == ["rebind.example"]
    assert tripwire.attempts == [("93.184.215.14", listeners[0].port)]
    assert listeners[0].connections == 0


async def test_a_name_with_one_private_answer_among_public_ones_is_refused(
    listeners: tuple[Receiver, Receiver],
) -> None:
    resolver = ScriptedResolver(["93.184.215.14", "127.0.0.1"])
    tripwire = Tripwire()
    client = make_client(WebhookConfig(), resolver=resolver, network=tripwire)
    try:
        with pytest.raises(DestinationRefused, match="loopback"):
            await deliver(
                client,
                payload(url=f"http://mixed.example:{listeners[0].port}/"),
                message_id="m",
                timeout_seconds=5,
            )
    finally:
        await client.aclose()

    assert tripwire.attempts == []


async def test_a_name_is_checked_each_time_a_new_connection_opens(
    listeners: tuple[Receiver, Receiver],
) -> None:
    # Given an allowed loopback answer first, then a refused one
    policy_config = WebhookConfig.from_env({"WORKQUEUE_WEBHOOK_ALLOW": "127.0.0.1"})
    resolver = ScriptedResolver(["127.0.0.1"], ["10.0.0.7"])
    tripwire = Tripwire()
    client = make_client(policy_config, resolver=resolver, network=tripwire)
    v4 = listeners[0]
    try:
        first = await deliver(
            client, payload(url=f"http://svc.test:{v4.port}/"), message_id="m1", timeout_seconds=5
        )
        # the receiver keeps the connection alive: close it to force a new one
        await client.aclose()
        client = make_client(policy_config, resolver=resolver, network=tripwire)
        with pytest.raises(DestinationRefused, match="private"):
            await deliver(
                client,
                payload(url=f"http://svc.test:{v4.port}/"),
                message_id="m2",
                timeout_seconds=5,
            )
    finally:
        await client.aclose()

    assert first.status == 200
    assert tripwire.attempts == [("127.0.0.1", v4.port)]


# ---------------------------------------------------------------------------------------------
# The allow-list
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allow", "host"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.0/8", "127.0.0.1"),
        (" 10.0.0.0/8 , 127.0.0.1 ", "127.0.0.1"),
        ("localhost", "localhost"),
        ("127.0.0.1, ::1", "localhost"),  # where localhost also resolves to ::1
        ("127.0.0.1", "2130706433"),
        ("127.0.0.1", "[::ffff:127.0.0.1]"),
    ],
)
async def test_the_allow_list_opens_loopback_receivers(
    listeners: tuple[Receiver, Receiver],
    tripwire: Tripwire,
    monkeypatch: pytest.MonkeyPatch,
    allow: str,
    host: str,
) -> None:
    monkeypatch.setenv("WORKQUEUE_WEBHOOK_ALLOW", allow)
    v4 = listeners[0]

    result = await http_webhook(payload(url=f"http://{host}:{v4.port}/"), make_context())

    assert result == {"status": 200}
    assert v4.connections == 1
    # the handler's own client went through the test's tripwire
    assert ("127.0.0.1", v4.port) in tripwire.attempts


async def test_the_allow_list_opens_ipv6_loopback(
    listeners: tuple[Receiver, Receiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKQUEUE_WEBHOOK_ALLOW", "::1")
    v6 = listeners[1]

    assert await http_webhook(payload(url=v6.url()), make_context()) == {"status": 200}


async def test_an_allowed_address_does_not_open_its_neighbours(
    listeners: tuple[Receiver, Receiver], tripwire: Tripwire, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKQUEUE_WEBHOOK_ALLOW", "127.0.0.2, 10.0.0.0/24")

    with pytest.raises(DestinationRefused):
        await http_webhook(payload(url=listeners[0].url()), make_context())

    assert tripwire.attempts == []


async def test_a_malformed_allow_list_fails_jobs_for_good_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORKQUEUE_WEBHOOK_ALLOW", "127.0.0.1, not a host!")

    with pytest.raises(PermanentError, match="WORKQUEUE_WEBHOOK_ALLOW: entry 2"):
        await http_webhook(payload(url="http://127.0.0.1/"), make_context())


def test_metadata_needs_its_exact_address_on_the_list() -> None:
    metadata = ipaddress.ip_address("169.254.169.254")
    broad = DestinationPolicy.from_allow_list("169.254.0.0/16, 0.0.0.0/0")
    exact = DestinationPolicy.from_allow_list("169.254.169.254")

    with pytest.raises(DestinationRefused, match="metadata"):
        broad.check(metadata)
    with pytest.raises(DestinationRefused, match="metadata"):
        broad.check(metadata, host_allowed=True)
    exact.check(metadata)
    broad.check(ipaddress.ip_address("169.254.10.10"))


# ---------------------------------------------------------------------------------------------
# Address classification
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0x7F.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("8.8.8.8", "8.8.8.8"),
    ],
)
def test_odd_literal_forms_are_read_as_addresses(literal: str, address: str) -> None:
    assert parse_ip_literal(literal) == ipaddress.ip_address(address)


@pytest.mark.parametrize(
    "literal", ["1.2.3.4.5", "256.1.1.1", "1.0x1000000", "09.1.1.1", "1..1", "x.0x"]
)
def test_malformed_numeric_hosts_are_not_names(literal: str) -> None:
    with pytest.raises(ValueError, match="not a valid IP address"):
        parse_ip_literal(literal)


@pytest.mark.parametrize("name", ["example.com", "localhost", "1a.example", "x.0xg"])
def test_names_are_not_literals(name: str) -> None:
    assert parse_ip_literal(name) is None


@pytest.mark.parametrize(
    "public",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.215.14",
        "2606:4700::1111",
        "64:ff9b::808:808",
        "2002:808:808::",
    ],
)
def test_public_unicast_addresses_are_allowed(public: str) -> None:
    assert blocked_reason(ipaddress.ip_address(public)) is None
