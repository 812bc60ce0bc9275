"""Redis clients with the timeouts and retry policy WorkQueue relies on."""

from __future__ import annotations

import ssl
from typing import Any, cast
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, NoPermissionError
from redis.exceptions import AuthenticationWrongNumberOfArgsError as AuthArgsError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from workqueue.broker.cluster import cluster_choice, cluster_mode, create_cluster_redis

__all__ = ["SENTINEL_SCHEMES", "create_redis", "setup_problem"]

#: URL schemes naming a Sentinel-managed primary (SPEC section 10)
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


class _WriteOnClosedTransportIsConnectionError:
    """uvloop raises ``RuntimeError`` ("the handler is closed"), not an ``OSError``, when a
    command is written to a connection the server (or the network) has just reset; redis-py
    then passes it on as it is. Turn it into the ``ConnectionError`` it is, so the retry
    policy and every caller's error handling see a broken connection."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        try:
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
        except RuntimeError as exc:  # the connection was already disconnected by redis-py
            raise RedisConnectionError(f"connection closed while writing: {exc}") from exc


_SAFE_CLASSES: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def _safe_connection_class(base: type[AbstractConnection]) -> type[AbstractConnection]:
    safe = _SAFE_CLASSES.get(base)
    if safe is None:
        safe = type(base.__name__, (_WriteOnClosedTransportIsConnectionError, base), {})
        _SAFE_CLASSES[base] = safe
    return safe


def create_redis(
    url: str,
    *,
    socket_timeout: float | None = 5.0,
    connect_timeout: float = 2.0,
    max_connections: int | None = None,
    retries: int = 2,
) -> Redis:
    """A client for ``redis://`` or ``rediss://`` URLs (user and password in the URL).

    When the URL names a node of a Redis Cluster (asked once, see
    :func:`workqueue.broker.cluster.cluster_mode`), the client is redis-py's ``RedisCluster``
    for the whole cluster, with the same TLS, timeout and retry settings. When the node cannot
    be asked (down, refused login), a plain client is returned: its errors tell what is wrong.
    The URL's ``cluster=yes`` / ``cluster=no`` query parameter decides without asking.

    For ``rediss://`` the server certificate is verified and its hostname checked, whatever
    the redis-py version's defaults are; the URL's query parameters (``ssl_ca_certs``,
    ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``, ``ssl_check_hostname``) override.

    A command whose connection breaks is retried ``retries`` times with a short backoff: every
    job script is safe to repeat (enqueue is keyed by job id, finish ops are fenced and report
    "duplicate" when they were already applied).
    """
    scheme = urlsplit(url).scheme
    if scheme in SENTINEL_SCHEMES:
        from workqueue.broker.sentinel import create_sentinel_redis

        return create_sentinel_redis(
            url,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            max_connections=max_connections,
            retries=retries,
        )
    tls: dict[str, Any] = {}
    if scheme == "rediss":
        tls = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    url, clustered = cluster_choice(url)
    if clustered is None and scheme in ("redis", "rediss"):
        clustered = cluster_mode(url, tls, connect_timeout)
    if clustered:
        # redis-py's cluster client has the plain client's command API (the broker checks
        # which one it has where they differ: workqueue.broker.cluster.is_cluster)
        return cast(
            Redis,
            create_cluster_redis(
                url,
                tls=tls,
                socket_timeout=socket_timeout,
                connect_timeout=connect_timeout,
                max_connections=max_connections,
                retries=retries,
                connection_class=_safe_connection_class,
            ),
        )
    redis: Redis = Redis.from_url(
        url,
        **tls,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        socket_keepalive=True,
        health_check_interval=15,
        max_connections=max_connections,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        decode_responses=False,
    )
    # The URL picks the class (TCP, TLS or Unix socket); each gets the same write-error fix.
    pool = redis.connection_pool
    pool.connection_class = _safe_connection_class(pool.connection_class)
    return redis


def setup_problem(exc: BaseException) -> str | None:
    """What to fix when ``exc`` is a set-up error that waiting will not cure (a refused
    login, a failed TLS handshake, a missing ACL permission); ``None`` for an outage."""
    if isinstance(exc, AuthenticationError | AuthArgsError):
        return "Redis refused the login: check the user and password in the Redis URL"
    if isinstance(exc, NoPermissionError):
        return (
            "the Redis user lacks a permission WorkQueue needs "
            "(see docs/operations.md, 'TLS and a restricted ACL user')"
        )
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLError) or "[SSL" in str(seen):
            return (
                "the TLS handshake with Redis failed: check the server certificate, "
                "ssl_ca_certs and the host name in the Redis URL"
            )
        seen = seen.__cause__ or seen.__context__
    return None
