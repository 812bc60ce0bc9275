"""Clients for ``redis+sentinel://`` and ``rediss+sentinel://`` URLs (SPEC section 10)."""

from __future__ import annotations

from redis.asyncio import Redis

from workqueue.errors import ConfigurationError

__all__ = ["create_sentinel_redis"]


def create_sentinel_redis(
    url: str,
    *,
    socket_timeout: float | None = 5.0,
    connect_timeout: float = 2.0,
    max_connections: int | None = None,
    retries: int = 2,
) -> Redis:
    """A client of the primary that the Sentinels of ``url`` name (not built yet)."""
    raise ConfigurationError("Redis Sentinel URLs are not supported yet")
