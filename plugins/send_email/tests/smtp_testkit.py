"""Helpers for the send_email tests: a recording aiosmtpd handler and job runners."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import msgspec
import workqueue_send_email
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from loguru import logger
from workqueue_send_email import EmailPayload

from workqueue import JobContext, WorkerInfo

WORKER = WorkerInfo(worker_id="test-worker", queues=("default",), concurrency=4)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Received:
    """One message as the server got it."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: Any
    tls: bool
    authenticated: bool

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data.replace(b"\r\n", b"\n"), policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Recorder:
    """An aiosmtpd handler: records every MAIL, RCPT and DATA, answers as told."""

    messages: list[Received] = field(default_factory=list)
    mail_froms: list[str] = field(default_factory=list)
    rcpt_tos: list[str] = field(default_factory=list)
    data_answer: str | None = None
    mail_answer: str | None = None
    mail_answers_once: list[str] = field(default_factory=list)
    rcpt_answers: dict[str, str] = field(default_factory=dict)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.mail_froms.append(address)
        if self.mail_answers_once:
            return self.mail_answers_once.pop(0)
        if self.mail_answer is not None:
            return self.mail_answer
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.rcpt_tos.append(address)
        if address in self.rcpt_answers:
            return self.rcpt_answers[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append(
            Received(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                data=envelope.content,
                peer=session.peer,
                tls=server.transport is not None
                and server.transport.get_extra_info("sslcontext") is not None,
                authenticated=bool(session.authenticated),
            )
        )
        return self.data_answer or "250 Message accepted"


@dataclass
class Server:
    port: int
    recorder: Recorder
    controller: Controller


def make_context(job_id: str = "job-1", attempt: int = 1) -> JobContext:
    return JobContext(
        job_id=job_id,
        type="send_email",
        queue="default",
        attempt=attempt,
        retries=3,
        enqueued_at=datetime.now(UTC),
        worker_id=WORKER.worker_id,
        timeout=60.0,
        logger=logger.bind(job_id=job_id, type="send_email"),
    )


def payload(**fields: Any) -> EmailPayload:
    """Validate like the producer does at enqueue."""
    return msgspec.convert(fields, EmailPayload)


async def start_worker() -> None:
    await workqueue_send_email.workqueue_worker_startup(WORKER)


async def run_job(fields: dict[str, Any], job_id: str = "job-1", attempt: int = 1) -> Any:
    return await workqueue_send_email.send_email(payload(**fields), make_context(job_id, attempt))
