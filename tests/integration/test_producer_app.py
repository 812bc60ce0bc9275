"""In-process tests of the producer app (Litestar's AsyncTestClient, real Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import redis.asyncio
from conftest import REDIS_URL, TEST_PLUGIN
from litestar.testing import AsyncTestClient

from workqueue.broker import BrokerConfig
from workqueue.broker.keys import GlobalKeys
from workqueue.producer import ProducerSettings, create_app
from workqueue.registry import build_registry


@pytest.fixture
async def app_client(
    installed_test_plugin: None, key_prefix: str
) -> AsyncIterator[AsyncTestClient[Any]]:
    settings = ProducerSettings(redis_url=REDIS_URL, broker=BrokerConfig(prefix=key_prefix))
    app = create_app(settings, build_registry(only=[TEST_PLUGIN]))
    async with AsyncTestClient(app) as client:
        yield client


def nested(depth: int) -> bytes:
    """A task whose body is ``depth`` levels deep (the task object itself is level 1)."""
    inner = b"1"
    for _ in range(depth - 1):
        inner = b'{"a": ' + inner + b"}"
    return b'{"type": "test_echo", "payload": ' + inner + b"}"


async def test_nesting_limit_is_exact(app_client: AsyncTestClient[Any]) -> None:
    assert (await app_client.post("/enqueue", content=nested(32))).status_code == 202
    response = await app_client.post("/enqueue", content=nested(33))
    assert response.status_code == 400
    assert "nested deeper than 32" in response.json()["problem"]


async def test_type_advertised_by_a_live_worker_is_accepted(
    app_client: AsyncTestClient[Any], key_prefix: str
) -> None:
    response = await app_client.post("/enqueue", json={"type": "remote_only"})
    assert response.status_code == 422
    assert "remote_only" not in response.json()["known"]
    keys = GlobalKeys(key_prefix)
    r = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await r.zadd(keys.workers, {"w-remote": 1})
        await r.set(keys.worker("w-remote"), msgspec.json.encode({"types": ["remote_only"]}))
    finally:
        await r.aclose()
    response = await app_client.post("/enqueue", json={"type": "remote_only"})
    assert response.status_code == 202, response.text
    response = await app_client.post("/enqueue", json={"type": "still_unknown"})
    assert response.status_code == 422
    assert {"remote_only", "test_echo"} <= set(response.json()["known"])


async def test_unexpected_error_is_a_json_500_without_traceback(
    app_client: AsyncTestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    client = app_client.app.state.client
    monkeypatch.setattr(client, "enqueue_specs", boom)
    response = await app_client.post("/enqueue", json={"type": "test_echo"})
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    assert "secret internals" not in response.text and "Traceback" not in response.text
