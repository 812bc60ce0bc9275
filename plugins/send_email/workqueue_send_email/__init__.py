"""WorkQueue plugin: the ``send_email`` job type.

Sends one e-mail per job over SMTP (``WORKQUEUE_SMTP_URL``). The payload is validated at enqueue
(:class:`~workqueue_send_email.schema.EmailPayload`); SMTP 4xx answers and network errors are
retried, 5xx answers and unusable settings fail the job for good. The Message-ID is derived from
the job id, so a job that runs twice (at-least-once delivery) sends the same Message-ID twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import msgspec

from workqueue import Backoff, JobContext, JobType, PermanentError, WorkerInfo, hookimpl
from workqueue_send_email.config import FROM_VARIABLE, SmtpConfig
from workqueue_send_email.message import build_message, message_id_for
from workqueue_send_email.schema import EmailPayload
from workqueue_send_email.sender import SmtpPermanentError, SmtpSender, SmtpTemporaryError
from workqueue_send_email.validation import domain_of

__all__ = [
    "EmailPayload",
    "SmtpPermanentError",
    "SmtpTemporaryError",
    "send_email",
    "workqueue_job_types",
    "workqueue_worker_shutdown",
    "workqueue_worker_startup",
]

__version__ = "0.1.0"

JOB_TYPE = "send_email"


class _Runtime:
    """The worker's shared :class:`SmtpSender`: opened by the startup hook, or on first use."""

    def __init__(self) -> None:
        self.sender: SmtpSender | None = None

    async def start(self) -> None:
        await self.stop()
        try:
            self.sender = SmtpSender(SmtpConfig.from_env())
        except PermanentError:
            # Not configured (or badly): the worker still starts and runs other job types;
            # each send_email job then fails with the configuration error.
            self.sender = None

    async def stop(self) -> None:
        sender, self.sender = self.sender, None
        if sender is not None and sender.loop is asyncio.get_running_loop():
            await sender.aclose()

    def current(self) -> SmtpSender:
        sender = self.sender
        if sender is None or sender.loop is not asyncio.get_running_loop():
            sender = self.sender = SmtpSender(SmtpConfig.from_env())
        return sender


_runtime = _Runtime()


async def send_email(payload: EmailPayload | dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Send ``payload`` as one message; return its Message-ID and the recipient count."""
    if not isinstance(payload, EmailPayload):
        try:
            payload = msgspec.convert(payload, EmailPayload)
        except msgspec.ValidationError as exc:
            raise PermanentError(f"invalid send_email payload: {exc}") from None
    sender = _runtime.current()
    config = sender.config
    from_address = payload.from_ or config.default_from
    if from_address is None:
        raise SmtpPermanentError(
            f"no sender address: set the payload's 'from' field or {FROM_VARIABLE}"
        )
    recipients = payload.recipients()
    if len(recipients) > config.max_recipients:
        raise SmtpPermanentError(
            f"{len(recipients)} recipients is over this worker's limit of {config.max_recipients}"
        )
    message_id = message_id_for(ctx.job_id, domain_of(from_address))
    data = build_message(payload, sender=from_address, message_id=message_id)
    await sender.send(from_address, recipients, data)
    ctx.logger.debug("e-mail accepted by the SMTP server for {} recipient(s)", len(recipients))
    return {"message_id": message_id, "recipients": len(recipients)}


@hookimpl
def workqueue_job_types() -> list[JobType]:
    """Register ``send_email``."""
    return [
        JobType(
            name=JOB_TYPE,
            handler=send_email,
            payload_schema=EmailPayload,
            retries=5,
            timeout=120.0,
            backoff=Backoff(base_seconds=10.0, factor=3.0, max_seconds=3600.0),
            description="Send an e-mail over SMTP (WORKQUEUE_SMTP_URL).",
        )
    ]


@hookimpl
def workqueue_worker_startup(worker: WorkerInfo) -> Awaitable[None]:
    """Create this worker's SMTP connection pool (connections open on first use)."""
    return _runtime.start()


@hookimpl
def workqueue_worker_shutdown(worker: WorkerInfo) -> Awaitable[None]:
    """Close the SMTP connections politely (QUIT)."""
    return _runtime.stop()
