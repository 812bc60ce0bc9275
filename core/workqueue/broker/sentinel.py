"""Clients for ``redis+sentinel://`` and ``rediss+sentinel://`` URLs (SPEC section 10).

The client's pool asks the Sentinels for the primary's address each time it opens a
connection (redis-py's :class:`SentinelConnectionPool`), so after a failover every connection
that breaks reconnects to the new primary: the ordinary commands, the enqueue channel (which
opens its connection through the same pool) and the blocking ``BLPOP`` client, which gets a
pool of its own from :meth:`SentinelPool.for_blocking` (same Sentinels, same primary, no
socket timeout). A reply ``READONLY`` (the node was demoted to a replica) drops the connection
and counts as a connection error, so it is retried on the primary the Sentinels name now.

Credentials: the URL's ``user:password`` log in to the data nodes (primary and replicas);
``sentinel_username`` / ``sentinel_password`` query options log in to the Sentinels when they
require it (``requirepass`` / ACL users in the Sentinel configuration). For
``rediss+sentinel://`` the Sentinels and the data nodes are both reached over TLS, with the
certificate verified and the hostname checked as for ``rediss://`` (the query's ``ssl_*``
options override).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from workqueue.broker.connection import _safe_connection_class
from workqueue.broker.sentinel_url import SentinelURL, parse_sentinel_url

__all__ = ["SentinelPool", "SentinelRedis", "create_sentinel_redis", "primary_answers"]

_TRUE = {"1", "true", "yes", "on", "y"}


class SentinelPool(SentinelConnectionPool):
    """The primary's pool; :meth:`for_blocking` makes a second one for blocking commands."""

    def for_blocking(self, max_connections: int = 2) -> SentinelPool:
        """A pool for ``BLPOP``: the same Sentinels and primary, no socket timeout (the
        caller bounds its wait), so it follows a failover as this one does."""
        kwargs = {k: v for k, v in self.connection_kwargs.items() if k != "connection_pool"}
        kwargs["socket_timeout"] = None
        return SentinelPool(  # type: ignore[no-untyped-call]
            self.service_name,
            self.sentinel_manager,
            connection_class=self.connection_class,
            max_connections=max_connections,
            is_master=True,
            **kwargs,
        )


class _Sentinel(Sentinel):
    """redis-py's Sentinel client, whose "no primary found" error keeps its cause: a login the
    Sentinels refused is an :class:`AuthenticationError`, and a failed TLS handshake stays in
    the error's chain, so :func:`~workqueue.broker.connection.setup_problem` can name them."""

    async def discover_master(self, service_name: str) -> Any:
        errors: list[RedisError] = []
        for index, sentinel in enumerate(self.sentinels):
            try:
                masters = await sentinel.sentinel_masters()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                errors.append(exc)
                continue
            state = masters.get(service_name) if isinstance(masters, dict) else None
            if state and self.check_master_state(state, service_name):
                # ask this Sentinel first next time
                self.sentinels[0], self.sentinels[index] = sentinel, self.sentinels[0]
                return state["ip"], state["port"]
        refused = next((e for e in errors if isinstance(e, AuthenticationError)), None)
        if refused is not None:
            raise AuthenticationError(
                "the Sentinels refused the login: check sentinel_username and "
                "sentinel_password in the Redis URL"
            ) from refused
        raise MasterNotFoundError(
            f"no primary found for {service_name!r}: {len(errors)} of {len(self.sentinels)} "
            "Sentinels unreachable, the others name no live primary"
        ) from (errors[-1] if errors else None)


class SentinelRedis(Redis):
    """A client of the primary that also closes its connections to the Sentinels."""

    _sentinel: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the client, its pool and the Sentinel clients."""
        await super().aclose(close_connection_pool)
        if self._sentinel is not None:
            await self._sentinel.aclose()


def _tls_kwargs(parsed: SentinelURL) -> dict[str, Any]:
    if not parsed.tls:
        return {}
    tls: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    for name, value in parsed.tls_options.items():
        tls[name] = value.strip().lower() in _TRUE if name == "ssl_check_hostname" else value
    return tls


def create_sentinel_redis(
    url: str,
    *,
    socket_timeout: float | None = 5.0,
    connect_timeout: float = 2.0,
    max_connections: int | None = None,
    retries: int = 2,
) -> Redis:
    """A client of the primary that the Sentinels of ``url`` name, following failovers.

    Raises :class:`~workqueue.errors.ConfigurationError` for a malformed URL. Nothing is
    contacted here: the Sentinels are asked on the first command.
    """
    parsed = parse_sentinel_url(url)
    tls = _tls_kwargs(parsed)
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "socket_keepalive": True,
        # a dead Sentinel is skipped (the next one is asked), so one quick retry is enough
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
        "username": parsed.sentinel_username,
        "password": parsed.sentinel_password,
        **({"ssl": True, **tls} if parsed.tls else {}),
    }
    sentinel = _Sentinel(list(parsed.sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    base = SentinelManagedSSLConnection if parsed.tls else SentinelManagedConnection
    redis = sentinel.master_for(
        parsed.master,
        redis_class=SentinelRedis,
        connection_pool_class=SentinelPool,
        connection_class=_safe_connection_class(base),
        username=parsed.username,
        password=parsed.password,
        db=parsed.db,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        socket_keepalive=True,
        health_check_interval=15,
        max_connections=max_connections,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        decode_responses=False,
        **tls,
    )
    assert isinstance(redis, SentinelRedis)
    redis._sentinel = sentinel
    return redis


def primary_answers(url: str, timeout: float = 1.0) -> bool:
    """Whether the Sentinels of ``url`` name a primary that answers PING (synchronous: for
    ``workqueue up``, outside any event loop)."""

    async def ping() -> bool:
        client = create_sentinel_redis(
            url, socket_timeout=timeout, connect_timeout=timeout, retries=0
        )
        try:
            return bool(await client.ping())
        finally:
            await client.aclose()

    try:
        return asyncio.run(ping())
    except (RedisError, OSError):
        return False
