"""Redis clients with the timeouts and retry policy WorkQueue relies on."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["create_redis"]


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
    return Redis.from_url(
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
