"""SMTP settings from ``WORKQUEUE_SMTP_*`` environment variables.

``WORKQUEUE_SMTP_URL`` is ``smtp://[user:password@]host[:port][?options]`` (plain SMTP, port 25
by default) or ``smtps://...`` (TLS from the first byte, port 465 by default). Options:

* ``starttls=true`` requires STARTTLS (the job fails for good if the server does not offer it,
  never falling back to plaintext); ``starttls=false`` never upgrades; without the option the
  connection upgrades when the server offers STARTTLS, and requires it when the URL holds
  credentials (so a password is never sent in clear unless ``starttls=false`` says so).
* ``timeout=SECONDS`` for connecting and for each SMTP command (default 30).
* ``pool_size=N`` connections kept open per worker process (default 2).
* ``helo=NAME`` the name sent in EHLO (default: this host's fully qualified name).

The sender of a payload without ``from`` is ``WORKQUEUE_SMTP_FROM``; unset, it is the SMTP
login when that is an address (``smtp://alerts%40example.org:pw@...``), else
``workqueue@`` this host's fully qualified name, so ``WORKQUEUE_SMTP_URL`` alone is enough.

Credentials and the URL itself never appear in error messages or in ``repr``.
"""

from __future__ import annotations

import math
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from workqueue import PermanentError
from workqueue_send_email.validation import check_address

__all__ = [
    "DEFAULT_MAX_RECIPIENTS",
    "SmtpConfig",
    "SmtpConfigError",
    "StartTls",
    "default_sender",
    "max_recipients_from_env",
]

URL_VARIABLE = "WORKQUEUE_SMTP_URL"
FROM_VARIABLE = "WORKQUEUE_SMTP_FROM"
CA_FILE_VARIABLE = "WORKQUEUE_SMTP_CA_FILE"
MAX_RECIPIENTS_VARIABLE = "WORKQUEUE_SMTP_MAX_RECIPIENTS"
DEFAULT_MAX_RECIPIENTS = 50
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_POOL_SIZE = 2

StartTls = Literal["auto", "required", "never"]
_STARTTLS_VALUES: dict[str, StartTls] = {
    "true": "required",
    "required": "required",
    "1": "required",
    "yes": "required",
    "false": "never",
    "never": "never",
    "0": "never",
    "no": "never",
    "auto": "auto",
}
_OPTIONS = frozenset({"starttls", "timeout", "pool_size", "helo"})


def _is_address(value: str) -> bool:
    try:
        check_address(value, "sender")
    except ValueError:
        return False
    return True


def default_sender(username: str | None, fqdn: str | None = None) -> str:
    """The sender when neither the payload nor ``WORKQUEUE_SMTP_FROM`` names one: the SMTP
    login if it is an address, else ``workqueue@<fqdn>`` (this host's name by default; a
    name that makes no address gives ``workqueue@localhost``)."""
    if username and _is_address(username):
        return username
    host = (fqdn if fqdn is not None else socket.getfqdn()).strip().rstrip(".").lower()
    candidate = f"workqueue@{host}"
    return candidate if host and _is_address(candidate) else "workqueue@localhost"


class SmtpConfigError(PermanentError):
    """Raised when the SMTP settings are missing or unusable; such a job fails without retry."""


def max_recipients_from_env(env: Mapping[str, str] | None = None) -> int:
    """The recipient cap (to + cc + bcc) from ``WORKQUEUE_SMTP_MAX_RECIPIENTS``, default 50."""
    raw = (os.environ if env is None else env).get(MAX_RECIPIENTS_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_MAX_RECIPIENTS
    try:
        value = int(raw)
    except ValueError:
        raise SmtpConfigError(f"{MAX_RECIPIENTS_VARIABLE} must be a whole number") from None
    if value < 1:
        raise SmtpConfigError(f"{MAX_RECIPIENTS_VARIABLE} must be at least 1")
    return value


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """Where and how to send: one value per worker process."""

    host: str
    port: int
    implicit_tls: bool = False
    starttls: StartTls = "auto"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    pool_size: int = DEFAULT_POOL_SIZE
    helo_name: str | None = None
    ca_file: str | None = None
    #: the sender of payloads without ``from`` (see :func:`default_sender` when unset)
    default_from: str | None = None
    max_recipients: int = DEFAULT_MAX_RECIPIENTS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SmtpConfig:
        """Read the ``WORKQUEUE_SMTP_*`` variables; raise :class:`SmtpConfigError` if unusable."""
        environ = os.environ if env is None else env
        url = environ.get(URL_VARIABLE, "").strip()
        if not url:
            raise SmtpConfigError(
                f"{URL_VARIABLE} is not set: the send_email job type needs an SMTP server, "
                "for example smtp://user:password@mail.example.org:587?starttls=true"
            )
        default_from = environ.get(FROM_VARIABLE, "").strip() or None
        if default_from is not None:
            try:
                check_address(default_from, FROM_VARIABLE)
            except ValueError as exc:
                raise SmtpConfigError(str(exc)) from None
        ca_file = environ.get(CA_FILE_VARIABLE, "").strip() or None
        return cls._from_url(
            url,
            default_from=default_from,
            ca_file=ca_file,
            max_recipients=max_recipients_from_env(environ),
        )

    @classmethod
    def _from_url(
        cls, url: str, *, default_from: str | None, ca_file: str | None, max_recipients: int
    ) -> SmtpConfig:
        try:
            parts = urlsplit(url)
            port_number = parts.port
        except ValueError:
            raise SmtpConfigError(f"{URL_VARIABLE} is not a valid URL") from None
        if parts.scheme not in ("smtp", "smtps"):
            raise SmtpConfigError(f"{URL_VARIABLE} must start with smtp:// or smtps://")
        if not parts.hostname:
            raise SmtpConfigError(f"{URL_VARIABLE} names no host")
        implicit_tls = parts.scheme == "smtps"
        options = _parse_options(parts.query)
        # Unset: STARTTLS when offered; but with credentials it is required, so a password
        # never crosses the network in clear unless starttls=false says so.
        has_credentials = parts.username is not None
        default = "required" if has_credentials and not implicit_tls else "auto"
        starttls = _STARTTLS_VALUES.get(options.get("starttls", default).lower())
        if starttls is None:
            raise SmtpConfigError(f"{URL_VARIABLE}: starttls must be true, false or auto")
        if implicit_tls and starttls == "required":
            raise SmtpConfigError(
                f"{URL_VARIABLE}: smtps:// is already TLS; starttls=true applies to smtp:// only"
            )
        username = unquote(parts.username) if parts.username is not None else None
        return cls(
            host=parts.hostname,
            port=port_number or (465 if implicit_tls else 25),
            implicit_tls=implicit_tls,
            starttls="never" if implicit_tls else starttls,
            username=username,
            password=unquote(parts.password) if parts.password is not None else None,
            timeout_seconds=_positive_number(options.get("timeout"), DEFAULT_TIMEOUT_SECONDS),
            pool_size=int(
                _positive_number(options.get("pool_size"), DEFAULT_POOL_SIZE, whole=True)
            ),
            helo_name=options.get("helo") or None,
            ca_file=ca_file,
            default_from=default_from or default_sender(username),
            max_recipients=max_recipients,
        )

    @property
    def uses_tls(self) -> bool:
        """Whether the connection may be encrypted (implicit TLS or STARTTLS)."""
        return self.implicit_tls or self.starttls != "never"

    def tls_context(self) -> ssl.SSLContext:
        """A verifying client context: the system store, or only ``WORKQUEUE_SMTP_CA_FILE``."""
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError):
            raise SmtpConfigError(
                f"{CA_FILE_VARIABLE} cannot be read as a PEM certificate file"
            ) from None


def _parse_options(query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in _OPTIONS:
            known = ", ".join(sorted(_OPTIONS))
            raise SmtpConfigError(f"{URL_VARIABLE}: unknown option {key!r} (known: {known})")
        options[key] = value
    return options


def _positive_number(raw: str | None, default: float, *, whole: bool = False) -> float:
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0 or (whole and not value.is_integer()):
        kind = "a whole number" if whole else "a number"
        raise SmtpConfigError(f"{URL_VARIABLE}: option values must be {kind} above 0")
    return value
