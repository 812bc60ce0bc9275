"""A TCP fault proxy for the fault suite: loopback listener -> a Redis port, switchable live.

The proxy runs its own asyncio loop in a background thread; tests switch its mode from the
test thread (every switch is thread-safe, it is an attribute read by the proxy on each chunk):

- ``pass_through()``: bytes are forwarded as they come;
- ``latency(seconds)``: every chunk is delivered ``seconds`` late, in each direction
  (chunks keep their order and are not throttled: a pipe with a long delay, not a slow pipe);
- ``reset_replies(every=N, keep=K, times=T)``: every N-th chunk coming back from the server
  is cut: its first K bytes (at most half of it) reach the client, then the client socket is
  closed with an RST (``SO_LINGER`` 0) and the server side is closed; after T cuts (when
  given) the proxy passes again;
- ``black_hole()``: nothing is forwarded any more, both ways; sockets stay open (a half-open
  peer). A connection that saw the black hole stays black-holed until its client closes it
  (its byte stream is broken for good), and new connections are accepted and black-holed too;
- ``refuse()``: the listener is closed, so new connections get ECONNREFUSED; open
  connections keep working. Any other mode listens again on the same port.

``stats`` counts connections accepted, resets made and bytes forwarded each way.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from redis_server import free_port

Mode = Literal["pass", "latency", "reset", "blackhole", "refuse"]

CHUNK = 65536


@dataclass
class ProxyStats:
    """What the proxy did so far (read from the test thread; ints only, so reads are safe)."""

    accepted: int = 0
    resets: int = 0
    to_server_bytes: int = 0
    to_client_bytes: int = 0
    server_chunks: int = 0
    blackholed_connections: int = 0


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    blackholed: bool = False
    closed: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class FaultProxy:
    """``FaultProxy(target_port).start()`` -> listening on ``port``; ``url`` is a Redis URL."""

    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = free_port()
        self.mode: Mode = "pass"
        self.delay = 0.0
        self.reset_every = 1
        self.reset_keep = 8
        self.reset_times: int | None = None
        self.stats = ProxyStats()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    # -- control (from the test thread) ---------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def close(self) -> None:
        """Stop listening, drop every connection and stop the thread."""
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def pass_through(self) -> None:
        self._set("pass")

    def latency(self, seconds: float) -> None:
        self.delay = seconds
        self._set("latency")

    def reset_replies(self, *, every: int = 1, keep: int = 8, times: int | None = None) -> None:
        """Cut every ``every``-th server chunk; after ``times`` cuts (if given), pass again."""
        self.reset_every = max(1, every)
        self.reset_keep = keep
        self.reset_times = times
        self.stats.server_chunks = 0
        self._set("reset")

    def black_hole(self) -> None:
        self._set("blackhole")

    def refuse(self) -> None:
        self._set("refuse")

    def open_connections(self) -> int:
        return len(self._conns)

    def _set(self, mode: Mode) -> None:
        self.mode = mode
        self._call(self._apply_listening())

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    # -- the loop's side --------------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )

    async def _apply_listening(self) -> None:
        if self.mode == "refuse" and self._server is not None:
            self._server.close()  # open connections are not touched
            self._server = None
        elif self.mode != "refuse" and self._server is None:
            await self._listen()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        tasks = [t for conn in self._conns for t in conn.tasks if not t.done()]
        for conn in list(self._conns):
            self._drop(conn, rst=False)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # asyncio logs an error for a cancelled connection callback: end quietly instead.
        with contextlib.suppress(asyncio.CancelledError):
            await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        conn = _Conn(writer)
        self._conns.add(conn)
        me = asyncio.current_task()
        assert me is not None
        conn.tasks.append(me)
        if self.mode == "blackhole":
            self._blackhole(conn)
        else:
            try:
                s_reader, s_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                self._drop(conn, rst=True)  # nothing listens behind: the client sees a reset
                return
            conn.server = s_writer
            conn.tasks.append(
                asyncio.create_task(self._pump(conn, s_reader, writer, to_client=True))
            )
        await self._pump(conn, reader, conn.server, to_client=False)

    def _blackhole(self, conn: _Conn) -> None:
        if not conn.blackholed:
            conn.blackholed = True
            self.stats.blackholed_connections += 1

    async def _pump(
        self,
        conn: _Conn,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter | None,
        *,
        to_client: bool,
    ) -> None:
        """Copy one direction until EOF; the mode is read for every chunk."""
        pending: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        sender = asyncio.create_task(self._send_later(conn, pending, writer, to_client))
        try:
            while not conn.closed:
                try:
                    data = await reader.read(CHUNK)
                except OSError:
                    break
                if not data:
                    break
                if self.mode == "blackhole":
                    self._blackhole(conn)
                if conn.blackholed or writer is None:
                    continue  # swallowed: the peer never hears of it
                if to_client and self.mode == "reset":
                    self.stats.server_chunks += 1
                    if self.stats.server_chunks % self.reset_every == 0:
                        part = data[: min(self.reset_keep, len(data) // 2)]
                        await pending.put((0.0, part))
                        await pending.put(None)
                        await sender
                        self.stats.resets += 1
                        if self.reset_times is not None:
                            self.reset_times -= 1
                            if self.reset_times <= 0:
                                self.mode = "pass"
                        self._drop(conn, rst=True)
                        return
                delay = self.delay if self.mode == "latency" else 0.0
                await pending.put((self._loop.time() + delay, data))
            await pending.put(None)
            await sender
            # One side closed: close the other (Redis connections never half-close), except
            # that a black-holed client keeps its socket open whatever the server does.
            if not (to_client and conn.blackholed):
                self._drop(conn, rst=False)
        finally:
            if not sender.done():
                sender.cancel()

    async def _send_later(
        self,
        conn: _Conn,
        pending: asyncio.Queue[tuple[float, bytes] | None],
        writer: asyncio.StreamWriter | None,
        to_client: bool,
    ) -> None:
        while True:
            item = await pending.get()
            if item is None or writer is None:
                return
            due, data = item
            wait = due - self._loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if conn.closed or conn.blackholed:
                continue
            try:
                writer.write(data)
                await writer.drain()
            except (OSError, RuntimeError):
                return
            if to_client:
                self.stats.to_client_bytes += len(data)
            else:
                self.stats.to_server_bytes += len(data)

    def _drop(self, conn: _Conn, *, rst: bool) -> None:
        if conn.closed:
            self._conns.discard(conn)
            return
        conn.closed = True
        self._conns.discard(conn)
        if rst:
            sock = conn.client.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.client.transport.abort()
        else:
            conn.client.close()
        if conn.server is not None:
            conn.server.close()
