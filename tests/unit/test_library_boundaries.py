"""Where WorkQueue reaches inside a library, the names it relies on still exist.

Two places use more than a public API, and pyproject.toml pins the tested range of both:
- ``broker/channel.py`` (the enqueue connection) writes to a redis-py connection's
  ``_writer`` and reads with its ``_parser``: redis-py has no public way to pipeline raw
  packed commands with the connection's own hiredis parser.
- ``producer/deadline.py`` subclasses uvicorn's HTTP protocols and reads ``cycle``,
  ``more_body``, ``response_complete`` and ``on_response_complete``: uvicorn has no public
  request deadline.

These tests fail with the name that went missing when an upgrade moves them, instead of the
product failing at run time.
"""

from __future__ import annotations

import asyncio
import inspect

import pytest
from redis.asyncio import Redis
from wq_testkit import REDIS_URL


async def test_redis_connection_has_the_writer_and_parser_the_enqueue_channel_uses() -> None:
    redis = Redis.from_url(REDIS_URL)
    try:
        conn = await redis.connection_pool.get_connection()
        try:
            await conn.connect()
            writer = conn._writer
            parser = conn._parser
            assert isinstance(writer, asyncio.StreamWriter)
            assert inspect.iscoroutinefunction(parser.read_response)
            # the exchange the channel makes: a packed command out, its reply through the parser
            writer.write(b"*1\r\n$4\r\nPING\r\n")
            await writer.drain()
            assert await parser.read_response() in (b"PONG", "PONG")
        finally:
            await redis.connection_pool.release(conn)
    finally:
        await redis.aclose()


@pytest.mark.parametrize("name", ["h11", "httptools"])
def test_uvicorn_protocols_have_what_the_request_deadline_uses(name: str) -> None:
    from uvicorn.config import HTTP_PROTOCOLS
    from uvicorn.importer import import_from_string

    from workqueue.producer.deadline import protocol_with_deadline

    base = import_from_string(HTTP_PROTOCOLS[name])
    for attribute in ("connection_made", "connection_lost", "on_response_complete"):
        assert callable(getattr(base, attribute, None)), f"{base.__name__}.{attribute}"
    # ``cycle`` is set in __init__ (None until the first request head is parsed)
    assert "self.cycle" in inspect.getsource(base.__init__), f"{base.__name__}.cycle"
    module = HTTP_PROTOCOLS[name].rsplit(":", 1)[0]
    source = inspect.getsource(import_from_string(f"{module}:RequestResponseCycle"))
    assert "self.more_body" in source and "self.response_complete" in source
    wrapped = protocol_with_deadline(name, 1.0)
    assert issubclass(wrapped, base)
