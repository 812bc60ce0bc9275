"""Send messages over a small pool of SMTP connections shared by the jobs of one worker.

Up to ``pool_size`` connections are open at once; a job takes an idle one (or opens a new one),
runs one mail transaction on it and gives it back. A connection that failed in any way is
closed, never reused. A connection that the server dropped while it sat idle is noticed on the
first command of the next transaction (before any message data was sent) and replaced once,
within the same attempt.

Every failure leaves here as one of two kinds: :class:`SmtpTemporaryError` (a plain exception:
the job is retried) or :class:`SmtpPermanentError` (a :class:`workqueue.PermanentError`).
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import aiosmtplib
from aiosmtplib.protocol import SMTPProtocol

from workqueue import PermanentError
from workqueue_send_email.config import CA_FILE_VARIABLE, URL_VARIABLE, SmtpConfig

__all__ = ["SmtpPermanentError", "SmtpSender", "SmtpTemporaryError", "translate_error"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_MAX_DETAIL = 300
_QUIT_TIMEOUT_SECONDS = 2.0
_E = TypeVar("_E", bound=BaseException)


class SmtpTemporaryError(Exception):
    """Raised when sending failed for a reason that may pass (SMTP 4xx, network, timeout)."""


class SmtpPermanentError(PermanentError):
    """Raised when the server refused for good (5xx), or TLS or AUTH cannot be set up."""


class _RecipientsRefused(Exception):
    def __init__(self, refused: list[tuple[int, aiosmtplib.SMTPRecipientRefused]], total: int):
        self.refused = refused
        self.total = total
        super().__init__(f"{len(refused)} of {total} recipients refused")


@dataclass(slots=True)
class _Connection:
    smtp: aiosmtplib.SMTP
    reused: bool = False
    last_used: float = 0.0


class SmtpSender:
    """The pool of one worker process; create it inside the running event loop."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self.loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(config.pool_size)
        self._idle: list[_Connection] = []
        self._tls: ssl.SSLContext | None = None
        self._closed = False
        self._closing: list[SMTPProtocol] = []

    async def send(self, sender: str, recipients: Sequence[str], message: bytes) -> None:
        """Run one transaction: MAIL FROM ``sender``, RCPT TO each recipient, DATA ``message``.

        All or nothing: if any recipient is refused the message goes to none of them, so a
        retried job never reaches one recipient twice.
        """
        if self._closed:
            raise SmtpTemporaryError("the worker is shutting down; the e-mail was not sent")
        redact = [sender, *recipients]
        async with self._slots:
            try:
                connection = await self._transaction(sender, recipients, message)
            except Exception as exc:
                raise translate_error(exc, redact) from None
            connection.reused = True
            connection.last_used = time.monotonic()
            if self.closed():
                await self._quit(connection.smtp)
            else:
                self._idle.append(connection)

    def closed(self) -> bool:
        """Whether :meth:`aclose` was called (the worker is stopping)."""
        return self._closed

    async def aclose(self) -> None:
        """Say QUIT on every idle connection; connections in use close when their job ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(connection.smtp) for connection in idle))
        await self._closed_down()

    async def _transaction(
        self, sender: str, recipients: Sequence[str], message: bytes
    ) -> _Connection:
        connection = await self._checkout()
        try:
            try:
                await _envelope(connection.smtp, sender, recipients)
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPSenderRefused) as exc:
                # An idle connection the server has closed (or is closing with 421): no data
                # was sent yet, so the transaction may start again on a fresh connection.
                stale = isinstance(exc, aiosmtplib.SMTPServerDisconnected) or exc.code == 421
                if not (connection.reused and stale):
                    raise
                self._discard(connection.smtp)
                connection = _Connection(await self._open())
                await _envelope(connection.smtp, sender, recipients)
            await connection.smtp.data(message)
        except BaseException:
            self._discard(connection.smtp)
            raise
        return connection

    async def _checkout(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if connection.smtp.is_connected:
                return connection
        return _Connection(await self._open())

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = self.config.tls_context()
        return self._tls

    async def _open(self) -> aiosmtplib.SMTP:
        config = self.config
        tls = self._tls_context() if config.uses_tls else None
        smtp = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            use_tls=config.implicit_tls,
            start_tls=False,
            timeout=config.timeout_seconds,
            tls_context=tls if config.implicit_tls else None,
            local_hostname=config.helo_name,
        )
        await smtp.connect()
        try:
            await _greet(smtp)
            if config.starttls != "never":
                if smtp.supports_extension("starttls"):
                    await smtp.starttls(server_hostname=config.host, tls_context=tls)
                    await _greet(smtp)
                elif config.starttls == "required":
                    raise SmtpPermanentError(
                        "the SMTP server does not offer STARTTLS, which "
                        f"{URL_VARIABLE} requires (starttls=true, or credentials without "
                        "starttls=false); nothing was sent"
                    )
            if config.username is not None:
                await smtp.login(config.username, config.password or "")
        except BaseException:
            self._discard(smtp)
            raise
        return smtp

    def _discard(self, smtp: aiosmtplib.SMTP) -> None:
        """Close a connection that failed; a TLS one finishes closing in the background."""
        protocol = smtp.protocol
        smtp.close()
        self._closing = [p for p in self._closing if p.transport is not None]
        if protocol is not None and protocol.transport is not None:
            self._closing.append(protocol)

    async def _quit(self, smtp: aiosmtplib.SMTP) -> None:
        protocol = smtp.protocol
        try:
            await smtp.quit(timeout=_QUIT_TIMEOUT_SECONDS)
        except (aiosmtplib.SMTPException, OSError):
            pass
        finally:
            smtp.close()
        if protocol is not None:
            self._closing.append(protocol)

    async def _closed_down(self) -> None:
        """Wait (briefly) until closed connections released their sockets (TLS close_notify)."""
        deadline = time.monotonic() + _QUIT_TIMEOUT_SECONDS
        while any(p.transport is not None for p in self._closing):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        self._closing = []


async def _greet(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.ehlo()
    except aiosmtplib.SMTPHeloError as exc:
        if exc.code < 500 or not smtp.is_connected:
            raise
        await smtp.helo()


async def _envelope(smtp: aiosmtplib.SMTP, sender: str, recipients: Sequence[str]) -> None:
    await smtp.mail(sender)
    refused: list[tuple[int, aiosmtplib.SMTPRecipientRefused]] = []
    for index, recipient in enumerate(recipients):
        try:
            await smtp.rcpt(recipient)
        except aiosmtplib.SMTPRecipientRefused as exc:
            refused.append((index, exc))
    if refused:
        raise _RecipientsRefused(refused, len(recipients))


def _clean(text: str, redact: Sequence[str]) -> str:
    """Server text for an error message: one line, short, with our addresses masked."""
    for address in redact:
        text = re.sub(re.escape(address), "<address>", text, flags=re.IGNORECASE)
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


def _cause_of(exc: BaseException, kind: type[_E]) -> _E | None:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


_KINDS: tuple[tuple[type[aiosmtplib.SMTPResponseException], str], ...] = (
    (aiosmtplib.SMTPConnectResponseError, "server not ready"),
    (aiosmtplib.SMTPHeloError, "greeting refused"),
    (aiosmtplib.SMTPAuthenticationError, "authentication refused"),
    (aiosmtplib.SMTPSenderRefused, "sender refused"),
    (aiosmtplib.SMTPRecipientRefused, "recipient refused"),
    (aiosmtplib.SMTPDataError, "message refused"),
)


def _response_error(exc: aiosmtplib.SMTPResponseException, redact: Sequence[str]) -> Exception:
    what = next((name for kind, name in _KINDS if isinstance(exc, kind)), "SMTP error")
    detail = f"{what}: {exc.code} {_clean(exc.message, redact)}"
    if 500 <= exc.code < 600:
        return SmtpPermanentError(detail)
    return SmtpTemporaryError(detail)


def _recipients_error(exc: _RecipientsRefused, redact: Sequence[str]) -> Exception:
    details = "; ".join(
        f"#{index + 1}: {refusal.code} {_clean(refusal.message, redact)}"
        for index, refusal in exc.refused[:3]
    )
    more = ", ..." if len(exc.refused) > 3 else ""
    detail = f"{exc} (nothing was sent): {details}{more}"
    if any(500 <= refusal.code < 600 for _, refusal in exc.refused):
        return SmtpPermanentError(detail)
    return SmtpTemporaryError(detail)


def translate_error(exc: Exception, redact: Sequence[str] = ()) -> Exception:
    """Map an aiosmtplib or network error to a retried or a permanent job failure."""
    if isinstance(exc, PermanentError | SmtpTemporaryError):
        return exc
    if isinstance(exc, _RecipientsRefused):
        return _recipients_error(exc, redact)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _response_error(exc, redact)
    untrusted = _cause_of(exc, ssl.SSLCertVerificationError)
    if untrusted is not None:
        return SmtpPermanentError(
            f"the SMTP server's TLS certificate is not trusted ({untrusted.verify_message}); "
            f"for a private CA set {CA_FILE_VARIABLE}"
        )
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        return SmtpTemporaryError(f"SMTP timeout: {_clean(str(exc), redact)}")
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPConnectError | OSError):
        return SmtpTemporaryError(f"SMTP connection failed: {_clean(str(exc), redact)}")
    if isinstance(exc, aiosmtplib.SMTPException):
        # Not supported by the server (AUTH, STARTTLS...) or a client-side misuse: no retry helps.
        return SmtpPermanentError(f"SMTP error: {_clean(exc.message, redact)}")
    return exc
