"""A dedicated connection for pipelined script calls: the enqueue hot path.

redis-py's command machinery (connection pool, retry wrapper, per-read timeout contexts,
response callbacks, observability hooks) costs more client CPU per call than Redis spends
running a small script. :class:`ScriptChannel` keeps one connection of the client's pool for
itself, packs commands with hiredis' C packer, writes a whole batch of commands at once and
reads the replies with the connection's own hiredis parser under one deadline per batch.

What it keeps from redis-py: the connection set-up (TLS, AUTH, SELECT, client name), the
client's retry policy (a broken or timed-out connection is dropped and the commands that have
no reply yet are sent again on a new one: callers only send commands that are safe to repeat),
the socket timeout (as one deadline per window of replies), and NOSCRIPT recovery (the script is
loaded and the command sent again).

Commands are packed lazily and at most ``window`` are awaiting a reply at a time, so a long
series (a 100k-job ``enqueue_many`` in chunks) overlaps packing the next chunk with Redis running
the previous one, and never builds one giant buffer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:
    from hiredis import pack_command as _c_pack
except ImportError:  # pragma: no cover - redis[hiredis] brings hiredis >= 2.1
    _c_pack = None  # type: ignore[assignment]

#: hiredis' C packer, else the Python one below
_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None = _c_pack

__all__ = ["ScriptChannel", "pack"]

#: a command is a function that packs it; called again when the command must be resent
Command = Callable[[], bytes]
_WRITE_HIGH_WATER = 1 << 20


def _pack_python(args: tuple[Any, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int | float):
            arg = repr(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def pack(args: tuple[Any, ...]) -> bytes:
    """One command in the Redis protocol (str as UTF-8, int and float as their decimal text)."""
    if _hiredis_pack is not None:
        packed: bytes = _hiredis_pack(args)
        return packed
    return _pack_python(args)


class ScriptChannel:
    """Sends commands on a connection of its own; one batch at a time (callers take turns)."""

    def __init__(self, redis: Redis, window: int = 4) -> None:
        self._redis = redis
        self._window = max(1, window)
        self._conn: Connection | None = None
        self._lock: asyncio.Lock | None = None
        kwargs = redis.connection_pool.connection_kwargs
        self._timeout: float | None = kwargs.get("socket_timeout")
        # the client's retry policy (redis-py's Retry is synchronous here: only its settings)
        retry = redis.get_retry()
        self._retries: int = retry.get_retries() if retry is not None else 0
        backoff = getattr(retry, "_backoff", None)
        self._backoff: Callable[[int], float] = (
            backoff.compute if backoff is not None else lambda failures: 0.0
        )

    async def _connection(self) -> Connection:
        conn = self._conn
        if conn is None:
            conn = await self._redis.connection_pool.get_connection()  # type: ignore[no-untyped-call]
            self._conn = conn
        if not conn.is_connected:
            await conn.connect()
        return conn

    async def close(self) -> None:
        """Give the connection back to the pool (the pool closes it with the client)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._redis.connection_pool.release(conn)

    async def execute(
        self, commands: list[Command], script: AsyncScript | None = None
    ) -> list[Any]:
        """Send ``commands`` in order and return their replies in order.

        An error reply is returned as its exception object (callers decide); a NOSCRIPT reply
        makes the channel load ``script`` and send that command again. Connection errors and
        timeouts are retried by the client's retry policy, resuming at the first command
        without a reply.
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            replies: list[Any] = []
            failures = 0
            while True:
                try:
                    await self._execute(commands, replies, script)
                    return replies
                except (RedisConnectionError, RedisTimeoutError):
                    failures += 1
                    if failures > self._retries:
                        raise
                    await asyncio.sleep(self._backoff(failures))

    async def _execute(
        self, commands: list[Command], replies: list[Any], script: AsyncScript | None
    ) -> None:
        conn = await self._connection()
        await self._guarded(conn, commands, replies)
        if script is not None and any(isinstance(r, NoScriptError) for r in replies):
            # Redis restarted or its scripts were flushed: load the script, send those again
            source = script.script
            again: list[Any] = []
            retried = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            load: Command = partial(pack, ("SCRIPT", "LOAD", source))
            await self._guarded(conn, [load, *(commands[i] for i in retried)], again)
            if isinstance(again[0], Exception):
                raise again[0]
            for index, reply in zip(retried, again[1:], strict=True):
                replies[index] = reply
        for index, reply in enumerate(replies):
            if isinstance(reply, ReadOnlyError):  # the node was demoted: reconnect (Sentinel
                del replies[index:]  # asks for the new primary), resend from this command
                await conn.disconnect(nowait=True)
                raise RedisConnectionError("the enqueue connection's node is a replica now")

    async def _guarded(self, conn: Connection, commands: list[Command], replies: list[Any]) -> None:
        """One exchange; the connection is dropped when it fails or is interrupted."""
        try:
            async with asyncio.timeout(self._timeout or None) as deadline:
                await self._exchange(conn, commands, replies, deadline)
        except TimeoutError:
            await conn.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout reading from Redis (enqueue channel)") from None
        except OSError as exc:
            await conn.disconnect(nowait=True)
            raise RedisConnectionError(f"Error talking to Redis: {exc}") from exc
        except BaseException:
            # cancelled or failed mid-exchange: replies may still be on the wire
            await conn.disconnect(nowait=True)
            raise

    async def _exchange(
        self,
        conn: Connection,
        commands: list[Command],
        replies: list[Any],
        deadline: asyncio.Timeout,
    ) -> None:
        """Write the commands that have no reply yet, at most ``window`` ahead of the replies;
        each reply must come within the socket timeout."""
        writer = conn._writer
        parser: Any = conn._parser
        if writer is None:
            raise RedisConnectionError("the enqueue connection is closed")
        loop = asyncio.get_running_loop()
        timeout = self._timeout
        start = len(replies)
        total = len(commands)
        sent = start
        while sent < total and sent - start < self._window:
            writer.write(commands[sent]())
            sent += 1
        if writer.transport.get_write_buffer_size() > _WRITE_HIGH_WATER:
            await writer.drain()
        while len(replies) < total:
            if timeout and len(replies) > start:  # the first reply: the deadline set on entry
                deadline.reschedule(loop.time() + timeout)
            replies.append(await parser.read_response())
            if sent < total:
                writer.write(commands[sent]())
                sent += 1
                if writer.transport.get_write_buffer_size() > _WRITE_HIGH_WATER:
                    await writer.drain()
