"""A tiny HTTP/1.1 server for the worker's metrics, inside the worker's own event loop.

Only ``GET``/``HEAD`` of a few paths; one request per connection; request heads are capped at
16 KiB and must arrive within 5 s, so a slow or hostile client cannot hold the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import msgspec
from loguru import logger

from workqueue.log import sanitize

__all__ = ["Handler", "Response", "serve"]

MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT_SECONDS = 5.0

Response = tuple[int, str, bytes]  # status, content type, body
Handler = Callable[[str, dict[str, str]], Awaitable[Response]]

REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


async def serve(host: str, port: int, handler: Handler) -> asyncio.Server:
    """Start serving; ``handler(path, headers)`` answers each GET."""

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT_SECONDS):
                head = await reader.readuntil(b"\r\n\r\n")
            status, ctype, body, method = await _answer(head, handler)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, ctype, body, method = 400, "application/json", b'{"error":"bad request"}', ""
        except Exception as exc:  # a metrics failure must never take the worker down
            logger.warning("metrics request failed: {}", sanitize(exc, 200))
            status, ctype, body, method = 503, "application/json", b'{"error":"unavailable"}', ""
        reason = REASONS.get(status, "Service Unavailable")
        head_out = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(head_out if method == "HEAD" else head_out + body)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()

    return await asyncio.start_server(on_connection, host, port, limit=MAX_HEAD_BYTES)


async def _answer(head: bytes, handler: Handler) -> tuple[int, str, bytes, str]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return 400, "application/json", b'{"error":"bad request line"}', ""
    method, target, _version = parts
    if method not in ("GET", "HEAD"):
        return 405, "application/json", b'{"error":"method not allowed"}', method
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    path = target.split("?", 1)[0]
    status, ctype, body = await handler(path, headers)
    return status, ctype, body, method


def json_response(status: int, data: object) -> Response:
    """A JSON answer."""
    return status, "application/json", msgspec.json.encode(data)
