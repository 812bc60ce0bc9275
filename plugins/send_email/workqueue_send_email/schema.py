"""The payload of a ``send_email`` job, validated by the producer before the job is queued."""

from __future__ import annotations

import msgspec

from workqueue_send_email.config import (
    DEFAULT_MAX_RECIPIENTS,
    SmtpConfigError,
    max_recipients_from_env,
)
from workqueue_send_email.validation import MAX_SUBJECT_LENGTH, check_address, check_header_text

__all__ = ["EmailPayload", "as_list"]


def _address_list(value: str | list[str] | None, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [check_address(value, field)]
    return [check_address(item, f"{field}[{index}]") for index, item in enumerate(value)]


class EmailPayload(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One e-mail: ``to`` and ``subject`` are required; everything else is optional.

    Address fields take one address or a list of them; after validation they are always lists.
    ``text`` and ``html`` together make a multipart/alternative message; with neither the body
    is empty. ``bcc`` recipients receive the message but never appear in its headers.
    """

    to: str | list[str]
    subject: str
    text: str | None = None
    html: str | None = None
    from_: str | None = msgspec.field(default=None, name="from")
    cc: str | list[str] | None = None
    bcc: str | list[str] | None = None
    reply_to: str | list[str] | None = None

    def __post_init__(self) -> None:
        self.to = _address_list(self.to, "to")
        if not self.to:
            raise ValueError("to: at least one recipient is required")
        self.cc = _address_list(self.cc, "cc")
        self.bcc = _address_list(self.bcc, "bcc")
        self.reply_to = _address_list(self.reply_to, "reply_to")
        if self.from_ is not None:
            check_address(self.from_, "from")
        check_header_text(self.subject, "subject")
        if len(self.subject) > MAX_SUBJECT_LENGTH:
            raise ValueError(f"subject: longer than {MAX_SUBJECT_LENGTH} characters")
        try:
            cap = max_recipients_from_env()
        except SmtpConfigError:
            # A malformed setting is reported by the worker; validation keeps the default.
            cap = DEFAULT_MAX_RECIPIENTS
        if len(self.recipients()) > cap:
            raise ValueError(
                f"to/cc/bcc: more than {cap} recipients in one message "
                "(WORKQUEUE_SMTP_MAX_RECIPIENTS); split it into several jobs"
            )

    def recipients(self) -> list[str]:
        """The envelope recipients: to, cc and bcc, in that order, each address once."""
        seen: set[str] = set()
        result: list[str] = []
        for field in (self.to, self.cc, self.bcc):
            for address in as_list(field):
                key = address.lower()
                if key not in seen:
                    seen.add(key)
                    result.append(address)
        return result


def as_list(value: str | list[str] | None) -> list[str]:
    """An address field as a list (fields are lists after validation; this also types them)."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)
