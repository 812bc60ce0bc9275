"""Helpers for the http_webhook tests: a local HTTP receiver, a tripwire backend, a verifier."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpcore
import msgspec
from loguru import logger
from workqueue_http_webhook import WebhookPayload

from workqueue import JobContext, WorkerInfo

WORKER = WorkerInfo(worker_id="test-worker", queues=("default",), concurrency=4)


# ---------------------------------------------------------------------------------------------
# The receiver: a small HTTP/1.1 server on asyncio streams
# ---------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """How the receiver answers one request."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    kind: Literal["normal", "tarpit", "stream"] = "normal"
    stream_bytes: int = 0


@dataclass
class Received:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """Records every connection and request; answers from a queue of :class:`Reply` objects."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.tls = tls
        self.port = 0
        self.connections = 0
        self.requests: list[Received] = []
        self.replies: list[Reply] = []
        self.bytes_sent = 0
        self.server_names: list[str | None] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Receiver:
        if self.tls is not None:
            self.tls.sni_callback = self._record_sni
        self._server = await asyncio.start_server(self._serve, self.host, 0, ssl=self.tls)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, path: str = "/hook", host: str | None = None) -> str:
        scheme = "https" if self.tls is not None else "http"
        name = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"{scheme}://{name}:{self.port}{path}"

    def _record_sni(self, sslobj: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        self.server_names.append(name)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append(Received(method, target, headers, body))
        reply = self.replies.pop(0) if self.replies else Reply()
        if reply.kind == "tarpit":
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok":
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(1.0)
            return False
        extra = "".join(f"{name}: {value}\r\n" for name, value in reply.headers.items())
        length = reply.stream_bytes if reply.kind == "stream" else len(reply.body)
        writer.write(
            f"HTTP/1.1 {reply.status} X\r\nContent-Length: {length}\r\n{extra}\r\n".encode()
        )
        if reply.kind == "stream":
            chunk = b"x" * 65536
            while self.bytes_sent < reply.stream_bytes:
                writer.write(chunk)
                self.bytes_sent += len(chunk)
                await writer.drain()
            return False
        writer.write(reply.body)
        await writer.drain()
        return True


# ---------------------------------------------------------------------------------------------
# A network backend that records every connection attempt and lets only loopback through
# ---------------------------------------------------------------------------------------------


class Tripwire(httpcore.AsyncNetworkBackend):
    """Under the guarded backend: whatever reaches it is an address the guard let through."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, int]] = []
        self._real = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.attempts.append((host, port))
        if not ipaddress.ip_address(host).is_loopback:
            # Tests never send traffic off this machine, even when the guard lets it through.
            raise httpcore.ConnectError("tripwire: test traffic stays on loopback")
        return await self._real.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


# ---------------------------------------------------------------------------------------------
# Standard Webhooks verification, written from the specification (independent of the plugin)
# ---------------------------------------------------------------------------------------------


def new_secret(seed: bytes) -> str:
    return "whsec_" + base64.b64encode(hashlib.sha256(seed).digest()).decode()


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """True when one of the ``v1`` signatures is HMAC-SHA256 of ``id.timestamp.body``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [
        part.split(",", 1)[1]
        for part in headers["webhook-signature"].split(" ")
        if part.startswith("v1,")
    ]
    return any(hmac.compare_digest(expected, signature) for signature in offered)


# ---------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------


def make_context(job_id: str = "msg_job-1", attempt: int = 1, timeout: float = 60.0) -> JobContext:
    return JobContext(
        job_id=job_id,
        type="http_webhook",
        queue="default",
        attempt=attempt,
        retries=5,
        enqueued_at=datetime.now(UTC),
        worker_id=WORKER.worker_id,
        timeout=timeout,
        logger=logger.bind(job_id=job_id, type="http_webhook"),
    )


def payload(**fields: Any) -> WebhookPayload:
    """Validate like the producer does at enqueue."""
    return msgspec.convert(fields, WebhookPayload)
