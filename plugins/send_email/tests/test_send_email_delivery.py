"""send_email against a real SMTP server (aiosmtpd in a thread of the test process)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable

import pytest
import workqueue_send_email
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from smtp_testkit import Server, free_port, make_context, payload, run_job, start_worker
from workqueue_send_email import SmtpTemporaryError
from workqueue_send_email.config import default_sender

from workqueue import PermanentError

SENDER = "noreply@example.org"


def use_server(monkeypatch: pytest.MonkeyPatch, url: str, *, sender: str | None = SENDER) -> None:
    monkeypatch.setenv("WORKQUEUE_SMTP_URL", url)
    if sender is not None:
        monkeypatch.setenv("WORKQUEUE_SMTP_FROM", sender)


# ---------------------------------------------------------------------------------------------
# Delivery
# ---------------------------------------------------------------------------------------------


async def test_envelope_holds_exactly_to_cc_bcc_and_no_bcc_header(
    smtp_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a plain SMTP server
    server = smtp_server()
    use_server(monkeypatch, f"smtp://127.0.0.1:{server.port}")
    await start_worker()

    # When one e-mail goes to two To, one Cc and one Bcc recipient
    result = await run_job(
        {
            "to": ["alice@example.org", "bob@example.net"],
            "cc": "carol@example.org",
            "bcc": ["dave@example.com"],
            "reply_to": "help@example.org",
            "subject": "Quarterly report",
            "text": "See attached.\n",
        },
        job_id="01HX-abc",
    )

    # Then the envelope has exactly those four recipients and the headers show no Bcc
    [received] = server.recorder.messages
    assert received.mail_from == SENDER
    assert received.rcpt_tos == [
        "alice@example.org",
        "bob@example.net",
        "carol@example.org",
        "dave@example.com",
    ]
    assert b"dave@example.com" not in received.data
    assert b"bcc" not in received.data.lower()
    message = received.message
    assert sorted(message.keys()) == sorted(
        [
            "From",
            "To",
            "Cc",
            "Reply-To",
            "Subject",
            "Date",
            "Message-ID",
            "Content-Type",
            "Content-Transfer-Encoding",
            "MIME-Version",
        ]
    )
    assert message["From"] == SENDER
    assert message["To"] == "alice@example.org, bob@example.net"
    assert message["Cc"] == "carol@example.org"
    assert message["Subject"] == "Quarterly report"
    assert message["Message-ID"] == "<workqueue.01HX-abc@example.org>"
    assert message.get_content() == "See attached.\n"
    assert result == {"message_id": "<workqueue.01HX-abc@example.org>", "recipients": 4}


async def test_seed_example_without_body_is_sent_with_an_empty_body(
    smtp_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = smtp_server()
    use_server(monkeypatch, f"smtp://127.0.0.1:{server.port}")

    await run_job({"to": "someone@example.com", "subject": "testing producer"})

    [received] = server.recorder.messages
    assert received.rcpt_tos == ["someone@example.com"]
    assert received.message.get_content_type() == "text/plain"
    assert received.message.get_content().strip() == ""


async def test_text_and_html_make_multipart_alternative(
    smtp_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = smtp_server()
    use_server(monkeypatch, f"smtp://127.0.0.1:{server.port}")

    await run_job(
        {
            "to": "a@example.org",
            "subject": "Grüße aus Köln",
            "text": "Hallo Welt, schön",
            "html": "<p>Hallo <b>Welt</b></p>",
        }
    )

    [received] = server.recorder.messages
    assert received.data.isascii()  # 7-bit clean: no 8BITMIME needed
    message = received.message
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content().strip() == "Hallo Welt, schön"
    assert parts[1].get_content().strip() == "<p>Hallo <b>Welt</b></p>"
    assert message["Subject"] == "Grüße aus Köln"


async def test_a_rerun_of_the_same_job_repeats_the_message_id(
    smtp_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    # T2: after a crash between sending and acknowledging, the job runs again
    server = smtp_server()
    use_server(monkeypatch, f"smtp://127.0.0.1:{server.port}")
    fields = {"to": "a@example.org", "subject": "once", "from": "billing@shop.example"}

    await run_job(fields, job_id="job-42", attempt=1)
    await run_job(fields, job_id="job-42", attempt=2)
    await run_job(fields, job_id="job-43", attempt=1)

    ids = [received.message["Message-ID"] for received in server.recorder.messages]
    assert ids[0] == ids[1] == "<workqueue.job-42@shop.example>"
    assert ids[2] != ids[0]
    assert server.recorder.messages[0].mail_from == "billing@shop.example"


async def test_one_connection_serves_consecutive_jobs(
    smtp_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = smtp_server()
    use_server(monkeypatch, f"smtp://127.0.0.1:{server.port}")
    await start_worker()

    for number in range(3):
        await run_job({"to": "a@example.org", "subject": f"#{number}"}, job_id=f"j{number}")

    peers = {received.peer for received in server.recorder.messages}
    assert len(server.recorder.messages) == 3
    assert len(peers) == 1


async def test_concurrent_jobs_share_a_bounded_pool(
    smtp_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = smtp_server()
    use_server(monkeypatch, f"smtp://127.0.0.1:{server.port}?pool_size=2")
    await start_worker()

    await asyncio.gather(
        *(run_job({"to": "a@example.org", "subject": "x"}, job_id=f"j{n}") for n in range(8))
    )

    assert len(server.recorder.messages) == 8
    assert len({received.peer for received in server.recorder.messages}) <= 2


async def test_a_connection_dropped_by_the_server_is_replaced(
    smtp_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a server that closes connections idle for 0.3 s
    server = smtp_server(timeout=0.3)
    use_server(monkeypatch, f"smtp://127.0.0.1:{server.port}")
    await start_worker()
    await run_job({"to": "a@example.org", "subject": "first"}, job_id="j1")

    # When the next job comes after the server dropped the pooled connection
    await asyncio.sleep(0.8)
    await run_job({"to": "a@example.org", "subject": "second"}, job_id="j2")

    # Then the second job reconnected by itself
    subjects = [received.message["Subject"] for received in server.recorder.messages]
    assert subjects == ["first", "second"]
    assert server.recorder.messages[0].peer != server.recorder.messages[1].peer


async def test_a_pooled_connection_the_server_is_closing_is_replaced_before_any_data(
    smtp_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a pooled connection, and a server that answers its next MAIL with 421 (idle timeout)
    server = smtp_server()
    use_server(monkeypatch, f"smtp://127.0.0.1:{server.port}")
    await start_worker()
    await run_job({"to": "a@example.org", "subject": "first"}, job_id="j1")
    server.recorder.mail_answers_once.append("421 4.4.2 Idle timeout, closing connection")

    # When the next job runs, it starts over on a fresh connection within the same attempt
    await run_job({"to": "a@example.org", "subject": "second"}, job_id="j2")

    assert len(server.recorder.mail_froms) == 3
    assert [received.message["Subject"] for received in server.recorder.messages] == [
        "first",
        "second",
    ]


# ---------------------------------------------------------------------------------------------
# TLS and authentication
# ---------------------------------------------------------------------------------------------


def password_checker(expected_user: bytes, expected_password: bytes) -> object:
    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: object
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == expected_user
            and data.password == expected_password
        )
        # handled=False: aiosmtpd answers 235 or 535 itself
        return AuthResult(success=ok, handled=False)

    return authenticate


async def test_starttls_and_auth_deliver_over_an_encrypted_session(
    smtp_server: Callable[..., Server],
    server_tls: ssl.SSLContext,
    ca_file: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a server that offers STARTTLS and AUTH (AUTH only once TLS is up)
    server = smtp_server(
        tls_context=server_tls,
        require_starttls=True,
        auth_required=True,
        authenticator=password_checker(b"mailer", b"s3cr3t/pw"),
    )
    use_server(monkeypatch, f"smtp://mailer:s3cr3t%2Fpw@127.0.0.1:{server.port}?starttls=true")
    monkeypatch.setenv("WORKQUEUE_SMTP_CA_FILE", ca_file)

    await run_job({"to": "a@example.org", "subject": "secure"})

    [received] = server.recorder.messages
    assert received.tls
    assert received.authenticated


async def test_auth_over_plain_smtp_when_the_server_allows_it(
    smtp_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = smtp_server(auth_require_tls=False, authenticator=password_checker(b"user", b"pw"))
    use_server(monkeypatch, f"smtp://user:pw@127.0.0.1:{server.port}?starttls=false")

    await run_job({"to": "a@example.org", "subject": "plain auth"})

    [received] = server.recorder.messages
    assert received.authenticated
    assert not received.tls


async def test_credentials_without_starttls_are_never_sent_in_clear(
    smtp_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given credentials in the URL, no starttls option, and a server without STARTTLS
    server = smtp_server(auth_require_tls=False, authenticator=password_checker(b"user", b"pw"))
    use_server(monkeypatch, f"smtp://user:pw@127.0.0.1:{server.port}")

    with pytest.raises(PermanentError, match="does not offer STARTTLS"):
        await run_job({"to": "a@example.org", "subject": "x"})

    assert server.recorder.mail_froms == []


async def test_wrong_password_fails_for_good_without_leaking_it(
    smtp_server: Callable[..., Server],
    server_tls: ssl.SSLContext,
    ca_file: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = smtp_server(
        tls_context=server_tls,
        auth_required=True,
        authenticator=password_checker(b"mailer", b"right"),
    )
    use_server(monkeypatch, f"smtp://mailer:WrongPassw0rd@127.0.0.1:{server.port}?starttls=true")
    monkeypatch.setenv("WORKQUEUE_SMTP_CA_FILE", ca_file)

    with pytest.raises(PermanentError, match="authentication refused: 535") as failure:
        await run_job({"to": "a@example.org", "subject": "x"})

    assert "WrongPassw0rd" not in str(failure.value)
    assert failure.value.__cause__ is None
    assert server.recorder.messages == []


async def test_smtps_uses_tls_from_the_first_byte(
    smtp_server: Callable[..., Server],
    server_tls: ssl.SSLContext,
    ca_file: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = smtp_server(ssl_context=server_tls)
    use_server(monkeypatch, f"smtps://127.0.0.1:{server.port}")
    monkeypatch.setenv("WORKQUEUE_SMTP_CA_FILE", ca_file)

    await run_job({"to": "a@example.org", "subject": "implicit tls"})

    [received] = server.recorder.messages
    assert received.tls


async def test_an_untrusted_certificate_fails_for_good(
    smtp_server: Callable[..., Server], server_tls: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No WORKQUEUE_SMTP_CA_FILE: the test CA is not in the system store
    server = smtp_server(ssl_context=server_tls)
    use_server(monkeypatch, f"smtps://127.0.0.1:{server.port}")

    with pytest.raises(PermanentError, match="certificate is not trusted"):
        await run_job({"to": "a@example.org", "subject": "x"})

    assert server.recorder.messages == []


async def test_required_starttls_not_offered_fails_for_good_and_sends_nothing(
    smtp_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a server without STARTTLS (a downgrade, or a misconfigured relay)
    server = smtp_server()
    use_server(monkeypatch, f"smtp://127.0.0.1:{server.port}?starttls=true")

    # When a job runs, it fails permanently before any MAIL or DATA
    with pytest.raises(PermanentError, match="does not offer STARTTLS"):
        await run_job({"to": "a@example.org", "subject": "x", "text": "secret body"})

    assert server.recorder.mail_froms == []
    assert server.recorder.messages == []


# ---------------------------------------------------------------------------------------------
# Which failures retry
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["mail", "rcpt", "data"])
async def test_421_is_a_retried_failure(
    stage: str, smtp_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = smtp_server()
    answer = "421 4.3.2 Service not available, try again later"
    if stage == "mail":
        server.recorder.mail_answer = answer
    elif stage == "rcpt":
        server.recorder.rcpt_answers["a@example.org"] = answer
    else:
        server.recorder.data_answer = answer
    use_server(monkeypatch, f"smtp://127.0.0.1:{server.port}")

    with pytest.raises(SmtpTemporaryError, match="421") as failure:
        await run_job({"to": "a@example.org", "subject": "x"})

    assert not isinstance(failure.value, PermanentError)


async def test_temporary_recipient_refusal_retries_and_sends_to_nobody(
    smtp_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = smtp_server()
    server.recorder.rcpt_answers["b@example.org"] = "450 4.2.1 Mailbox busy"
    use_server(monkeypatch, f"smtp://127.0.0.1:{server.port}")

    with pytest.raises(SmtpTemporaryError, match="1 of 2 recipients refused"):
        await run_job({"to": ["a@example.org", "b@example.org"], "subject": "x"})

    assert server.recorder.messages == []


async def test_550_on_data_fails_for_good(
    smtp_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = smtp_server()
    server.recorder.data_answer = "550 5.7.1 Message rejected as spam"
    use_server(monkeypatch, f"smtp://127.0.0.1:{server.port}")

    with pytest.raises(PermanentError, match=r"message refused: 550 5\.7\.1"):
        await run_job({"to": "a@example.org", "subject": "x"})


async def test_550_for_one_recipient_fails_for_good_without_naming_it(
    smtp_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = smtp_server()
    server.recorder.rcpt_answers["ghost@example.org"] = (
        "550 5.1.1 <ghost@example.org>: Recipient address rejected"
    )
    use_server(monkeypatch, f"smtp://127.0.0.1:{server.port}")

    with pytest.raises(PermanentError, match=r"#2: 550 5\.1\.1") as failure:
        await run_job({"to": ["a@example.org", "ghost@example.org"], "subject": "x"})

    assert "ghost@example.org" not in str(failure.value)
    assert server.recorder.messages == []


async def test_a_refused_sender_fails_for_good(
    smtp_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = smtp_server()
    server.recorder.mail_answer = "553 5.7.1 Sender address rejected: not owned by user"
    use_server(monkeypatch, f"smtp://127.0.0.1:{server.port}")

    with pytest.raises(PermanentError, match="sender refused: 553"):
        await run_job({"to": "a@example.org", "subject": "x"})


async def test_connection_refused_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    use_server(monkeypatch, f"smtp://127.0.0.1:{free_port()}")

    with pytest.raises(SmtpTemporaryError, match="connection failed"):
        await run_job({"to": "a@example.org", "subject": "x"})


async def test_a_silent_server_times_out_and_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a server that accepts the connection and never greets
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    use_server(monkeypatch, f"smtp://127.0.0.1:{port}?timeout=0.5")
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(SmtpTemporaryError, match=r"(?i)timeout|timed out"):
            await run_job({"to": "a@example.org", "subject": "x"})
        assert loop.time() - started < 5
    finally:
        listener.close()
        await listener.wait_closed()


# ---------------------------------------------------------------------------------------------
# Configuration problems
# ---------------------------------------------------------------------------------------------


async def test_missing_smtp_url_fails_for_good_naming_the_variable() -> None:
    with pytest.raises(PermanentError, match="WORKQUEUE_SMTP_URL is not set"):
        await run_job({"to": "a@example.org", "subject": "x"})


async def test_missing_smtp_url_does_not_stop_the_worker() -> None:
    await start_worker()  # must not raise: other job types keep running

    with pytest.raises(PermanentError, match="WORKQUEUE_SMTP_URL"):
        await run_job({"to": "a@example.org", "subject": "x"})


async def test_the_smtp_url_alone_is_enough_the_sender_is_workqueue_at_this_host(
    smtp_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given only WORKQUEUE_SMTP_URL, as the top-level README says suffices
    server = smtp_server()
    use_server(monkeypatch, f"smtp://127.0.0.1:{server.port}", sender=None)
    await start_worker()

    # When the seed's e-mail (no 'from') is sent
    await run_job({"to": "a@example.org", "subject": "testing producer"})

    # Then it is delivered from workqueue@<this host's FQDN>
    expected = default_sender(None)
    assert expected == f"workqueue@{socket.getfqdn().rstrip('.').lower()}" or (
        expected == "workqueue@localhost"
    )
    [received] = server.recorder.messages
    assert received.mail_from == expected
    assert received.message["From"] == expected


def login_server(smtp_server: Callable[..., Server]) -> Server:
    """A plain SMTP server whose one login, alerts@example.org, is an address."""
    return smtp_server(
        auth_require_tls=False, authenticator=password_checker(b"alerts@example.org", b"pw")
    )


async def test_an_smtp_login_that_is_an_address_is_the_default_sender(
    smtp_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = login_server(smtp_server)
    use_server(
        monkeypatch,
        f"smtp://alerts%40example.org:pw@127.0.0.1:{server.port}?starttls=false",
        sender=None,
    )
    await start_worker()

    await run_job({"to": "a@example.org", "subject": "x"})

    [received] = server.recorder.messages
    assert received.authenticated and received.mail_from == "alerts@example.org"


def test_the_default_sender_rules() -> None:
    assert default_sender("alerts@example.org", "mail.example.net") == "alerts@example.org"
    assert default_sender("mailer", "Host.Example.NET.") == "workqueue@host.example.net"
    assert default_sender(None, "") == "workqueue@localhost"
    assert default_sender(None, "bad host\n") == "workqueue@localhost"


async def test_smtp_from_still_wins_over_the_login(
    smtp_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = login_server(smtp_server)
    use_server(
        monkeypatch, f"smtp://alerts%40example.org:pw@127.0.0.1:{server.port}?starttls=false"
    )
    await start_worker()

    await run_job({"to": "a@example.org", "subject": "x"})

    assert server.recorder.mail_froms == [SENDER]


async def test_the_worker_enforces_its_own_recipient_cap(
    smtp_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = smtp_server()
    use_server(monkeypatch, f"smtp://127.0.0.1:{server.port}")
    fields = {"to": ["a@example.org", "b@example.org", "c@example.org"], "subject": "x"}
    job = payload(**fields)  # validated under the default cap of 50
    monkeypatch.setenv("WORKQUEUE_SMTP_MAX_RECIPIENTS", "2")  # this worker allows fewer

    with pytest.raises(PermanentError, match="over this worker's limit of 2"):
        await workqueue_send_email.send_email(job, make_context())
    assert server.recorder.mail_froms == []
