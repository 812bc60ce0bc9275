"""What a Redis Cluster's failover throws at the producer and the connections becomes the
errors the rest of WorkQueue retries (found by tests/faults/test_cluster_failover.py)."""

from __future__ import annotations

from typing import Any

import pytest
from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError

from workqueue.broker.connection import _WriteOnClosedTransportIsConnectionError
from workqueue.producer.app import handle_error


@pytest.mark.parametrize(
    "exc",
    [
        ClusterDownError("The cluster is down"),
        TryAgainError("TRYAGAIN"),
        MovedError("3999 127.0.0.1:7001"),
        AskError("3999 127.0.0.1:7001"),
    ],
)
def test_a_cluster_redirection_left_after_the_retries_is_a_503(exc: Exception) -> None:
    answer = handle_error(None, exc)  # type: ignore[arg-type]
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "1"
    assert answer.content.error == "broker_unavailable"


class _Dropped:
    """A redis-py connection whose writer another task dropped during the write."""

    _writer: object | None = None

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        raise AttributeError("'NoneType' object has no attribute 'writelines'")


class _Live(_Dropped):
    _writer = object()


async def test_a_connection_dropped_while_writing_is_a_connection_error() -> None:
    conn = type("Conn", (_WriteOnClosedTransportIsConnectionError, _Dropped), {})()
    with pytest.raises(RedisConnectionError):
        await conn.send_packed_command(b"PING")


async def test_another_attribute_error_is_not_hidden() -> None:
    conn = type("Conn", (_WriteOnClosedTransportIsConnectionError, _Live), {})()
    with pytest.raises(AttributeError):
        await conn.send_packed_command(b"PING")
