"""Redis clients with the timeouts and retry policy WorkQueue relies on."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["create_redis"]


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

    A command whose connection breaks is retried ``retries`` times with a short backoff: every
    job script is safe to repeat (enqueue is keyed by job id, finish ops are fenced and report
    "duplicate" when they were already applied).
    """
    redis: Redis = Redis.from_url(
        url,
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
