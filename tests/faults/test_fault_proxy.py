"""The fault proxy itself does what the T12 tests rely on: it forwards bytes unchanged, delays
them by the latency asked for, cuts a reply half-way with an RST, black-holes, and refuses."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from fault_proxy import FaultProxy
from redis_server import RedisServer


@pytest.fixture
def proxy(private_redis: RedisServer) -> Iterator[FaultProxy]:
    p = FaultProxy(private_redis.port).start()
    yield p
    p.close()


def _connect(proxy: FaultProxy, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)
    return sock


def _command(*parts: bytes) -> bytes:
    out = b"*%d\r\n" % len(parts)
    for part in parts:
        out += b"$%d\r\n%s\r\n" % (len(part), part)
    return out


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _read_until_closed(sock: socket.socket) -> tuple[bytes, OSError | None]:
    received = b""
    for _ in range(1000):
        try:
            chunk = sock.recv(65536)
        except OSError as exc:
            return received, exc
        if not chunk:
            break
        received += chunk
    return received, None


def test_pass_through_forwards_bytes_unchanged(proxy: FaultProxy) -> None:
    value = bytes(range(256)) * 1000  # 256 kB, every byte value
    with _connect(proxy) as sock:
        sock.sendall(_command(b"SET", b"k", value) + _command(b"GET", b"k"))
        expected = b"+OK\r\n" + b"$%d\r\n" % len(value) + value + b"\r\n"
        assert _read_exactly(sock, len(expected)) == expected
    assert proxy.stats.accepted == 1


def test_latency_delays_each_direction(proxy: FaultProxy) -> None:
    proxy.latency(0.3)
    with _connect(proxy) as sock:
        started = time.monotonic()
        sock.sendall(_command(b"PING"))
        assert _read_exactly(sock, 7) == b"+PONG\r\n"
        # request and reply are each held 0.3 s: the round trip cannot be shorter than 0.6 s
        assert time.monotonic() - started >= 0.6
    proxy.pass_through()
    with _connect(proxy) as sock:
        sock.sendall(_command(b"PING"))
        assert _read_exactly(sock, 7) == b"+PONG\r\n"


def test_reset_cuts_a_reply_with_rst(proxy: FaultProxy) -> None:
    value = b"x" * 100_000
    with _connect(proxy) as sock:
        sock.sendall(_command(b"SET", b"big", value))
        assert _read_exactly(sock, 5) == b"+OK\r\n"
        proxy.reset_replies(every=1, keep=8)
        sock.sendall(_command(b"GET", b"big"))
        received, error = _read_until_closed(sock)
        assert isinstance(error, ConnectionResetError), error  # an RST, not an orderly FIN
        assert 0 < len(received) < len(value)
        assert received.startswith(b"$100000\r\n"[: len(received)])
    assert proxy.stats.resets == 1


def test_black_hole_keeps_the_socket_open_and_answers_nothing(proxy: FaultProxy) -> None:
    with _connect(proxy, timeout=1.0) as before:
        before.sendall(_command(b"PING"))
        assert _read_exactly(before, 7) == b"+PONG\r\n"
        proxy.black_hole()
        with _connect(proxy, timeout=1.0) as during:
            for sock in (before, during):
                sock.sendall(_command(b"PING"))
                with pytest.raises(TimeoutError):
                    sock.recv(16)
            proxy.pass_through()
            # a black-holed connection never recovers (its stream lost bytes) ...
            before.sendall(_command(b"PING"))
            with pytest.raises(TimeoutError):
                before.recv(16)
        # ... but new connections work again
        with _connect(proxy) as after:
            after.sendall(_command(b"PING"))
            assert _read_exactly(after, 7) == b"+PONG\r\n"
    assert proxy.stats.blackholed_connections == 2


def test_refuse_closes_the_listener_but_not_open_connections(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(_command(b"PING"))  # the proxy has taken the connection (not in backlog)
        assert _read_exactly(sock, 7) == b"+PONG\r\n"
        proxy.refuse()
        with pytest.raises(ConnectionRefusedError):
            _connect(proxy)
        sock.sendall(_command(b"PING"))
        assert _read_exactly(sock, 7) == b"+PONG\r\n"
    proxy.pass_through()
    with _connect(proxy) as sock:
        sock.sendall(_command(b"PING"))
        assert _read_exactly(sock, 7) == b"+PONG\r\n"
