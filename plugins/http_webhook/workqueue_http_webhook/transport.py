"""An httpx transport that checks every address it connects to (no DNS rebinding).

httpx hands requests to an httpcore connection pool, and the pool opens TCP connections through
a *network backend*: ``connect_tcp(host, port)``. :class:`GuardedBackend` is such a backend. It
resolves the host itself (once), asks the :class:`~.ssrf.DestinationPolicy` about every address,
and then connects to one of those checked addresses, never to the name. The request keeps the
original URL, so the ``Host`` header, TLS SNI and certificate verification all use the host
name, and pooled connections are keyed by it. A name that resolves to a public address at check
time and to 127.0.0.1 a moment later cannot slip through, because nothing resolves it twice.

:class:`GuardedTransport` is a small ``httpx.AsyncBaseTransport`` over an
``httpcore.AsyncConnectionPool`` built with that backend (httpx's own transport has no public
way to pass a backend). Redirects are not followed by the client, and proxies are never used.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator

import httpcore
import httpx

from workqueue_http_webhook.ssrf import (
    DestinationPolicy,
    DestinationRefused,
    IPAddress,
    parse_ip_literal,
)

__all__ = ["GuardedBackend", "GuardedTransport", "Resolver", "system_resolver"]

#: ``resolver(host, port)`` returns the addresses the host name resolves to, as strings.
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve with the operating system's resolver (``getaddrinfo``), off the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolve, check every address, connect to a checked address."""

    def __init__(
        self,
        policy: DestinationPolicy,
        *,
        resolver: Resolver = system_resolver,
        network: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        self.network = network or httpcore.AnyIOBackend()

    async def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The checked addresses for ``host``; raises :class:`DestinationRefused` if any fails."""
        try:
            literal = parse_ip_literal(host)
        except ValueError:
            raise DestinationRefused("destination not allowed: malformed IP address") from None
        if literal is not None:
            self.policy.check(literal)
            return [literal]
        try:
            answers = await self.resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"could not resolve the host name: {exc}") from exc
        addresses: list[IPAddress] = []
        for answer in answers:
            address = parse_ip_literal(answer)
            if address is None:
                raise httpcore.ConnectError("the resolver returned something that is not an IP")
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise httpcore.ConnectError("the host name resolved to no address")
        allowed_by_name = self.policy.host_allowed(host)
        for address in addresses:
            self.policy.check(address, host_allowed=allowed_by_name)
        return addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Open a TCP connection to the first checked address of ``host`` that answers."""
        failure: Exception | None = None
        for address in await self.addresses(host, port):
            target = address.ipv4_mapped if address.version == 6 and address.ipv4_mapped else None
            try:
                return await self.network.connect_tcp(
                    str(target or address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Unix sockets are never a webhook destination."""
        raise DestinationRefused("destination not allowed: unix sockets")

    async def sleep(self, seconds: float) -> None:
        """Wait, as httpcore's retry loop asks."""
        await asyncio.sleep(seconds)


_EXCEPTIONS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _httpx_exceptions() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for source, target in _EXCEPTIONS:
            if isinstance(exc, source):
                raise target(str(exc)) from exc
        raise


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: typing.AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_exceptions():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


class GuardedTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over a connection pool whose every connection passed the SSRF policy."""

    def __init__(
        self,
        policy: DestinationPolicy,
        *,
        resolver: Resolver = system_resolver,
        network: httpcore.AsyncNetworkBackend | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 100,
        max_keepalive_connections: int = 20,
        keepalive_expiry_seconds: float = 5.0,
    ) -> None:
        self.backend = GuardedBackend(policy, resolver=resolver, network=network)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
            keepalive_expiry=keepalive_expiry_seconds,
            network_backend=self.backend,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the guarded pool."""
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_exceptions():
            response = await self._pool.handle_async_request(core_request)
        assert isinstance(response.stream, typing.AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._pool.aclose()
