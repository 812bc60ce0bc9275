"""Turn a validated :class:`EmailPayload` into the exact bytes sent after SMTP ``DATA``."""

from __future__ import annotations

import email.policy
import hashlib
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

from workqueue_send_email.schema import EmailPayload, as_list

__all__ = ["build_message", "message_id_for"]

_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
# CRLF line endings, and non-ASCII bodies as quoted-printable or base64 rather than raw 8-bit
# (a server without 8BITMIME would be entitled to refuse or mangle them).
_POLICY = email.policy.SMTP.clone(cte_type="7bit")


def message_id_for(job_id: str, domain: str) -> str:
    """A Message-ID that depends only on the job: a re-run after a crash repeats it.

    Receivers (and the SMTP server's duplicate filter, where it has one) can then recognise a
    second delivery of the same job.
    """
    token = job_id if _SAFE_ID.fullmatch(job_id) else hashlib.sha256(job_id.encode()).hexdigest()
    return f"<workqueue.{token}@{domain}>"


def build_message(
    payload: EmailPayload, *, sender: str, message_id: str, now: datetime | None = None
) -> bytes:
    """The RFC 5322 message, CRLF line endings, 7-bit clean; ``bcc`` is never a header."""
    message = EmailMessage(policy=_POLICY)
    message["From"] = sender
    message["To"] = ", ".join(as_list(payload.to))
    cc = as_list(payload.cc)
    if cc:
        message["Cc"] = ", ".join(cc)
    reply_to = as_list(payload.reply_to)
    if reply_to:
        message["Reply-To"] = ", ".join(reply_to)
    message["Subject"] = payload.subject
    message["Date"] = format_datetime(now or datetime.now(UTC))
    message["Message-ID"] = message_id
    if payload.text is not None and payload.html is not None:
        message.set_content(payload.text)
        message.add_alternative(payload.html, subtype="html")
    elif payload.html is not None:
        message.set_content(payload.html, subtype="html")
    else:
        message.set_content(payload.text or "")
    return message.as_bytes()
