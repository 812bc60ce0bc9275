"""In-process tests of the producer app (Litestar's AsyncTestClient, real Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import redis.asyncio
from litestar.testing import AsyncTestClient
from wq_testkit import REDIS_URL, TEST_PLUGIN

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
        client.headers["Content-Type"] = "application/json"  # raw bodies are declared JSON
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


def _task_body_schema(document: dict[str, Any], path: str = "/enqueue") -> dict[str, Any]:
    schema: dict[str, Any] = document["paths"][path]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]
    return schema


async def test_openapi_states_exactly_what_is_accepted(app_client: AsyncTestClient[Any]) -> None:
    document = (await app_client.get("/schema/openapi.json")).json()
    task = _task_body_schema(document)
    assert task["additionalProperties"] is False
    assert task["properties"]["type"]["enum"] == build_registry(only=[TEST_PLUGIN]).names()
    assert task["properties"]["retries"]["maximum"] == 100
    assert task["properties"]["run_at"]["format"] == "date-time"
    assert {"required": ["retries", "Retries"]} in task["not"]["anyOf"]
    (add,) = [c for c in task["allOf"] if c["if"]["properties"]["type"]["const"] == "test_sync_add"]
    payload = add["then"]["properties"]["payload"]
    assert add["then"]["required"] == ["payload"]
    assert payload["required"] == ["a", "b"] and payload["additionalProperties"] is False
    assert "$ref" not in payload and "$defs" not in payload
    assert "JsonValue" in document["components"]["schemas"]
    batch = _task_body_schema(document, "/api/enqueue/batch")
    assert batch["maxItems"] == 1000 and batch["items"] == task
    responses = document["paths"]["/enqueue"]["post"]["responses"]
    assert {"200", "202", "400", "413", "422", "503"} <= set(responses)
    assert "401" not in responses
    assert "Retry-After" in responses["503"]["headers"]
    assert "404" in document["paths"]["/jobs/{job_id}"]["get"]["responses"]


async def test_openapi_with_an_api_key_documents_401(
    installed_test_plugin: None, key_prefix: str
) -> None:
    settings = ProducerSettings(
        redis_url=REDIS_URL, broker=BrokerConfig(prefix=key_prefix), api_key="k"
    )
    app = create_app(settings, build_registry(only=[TEST_PLUGIN]))
    async with AsyncTestClient(app) as client:
        document = (
            await client.get("/schema/openapi.json", headers={"Authorization": "Bearer k"})
        ).json()
    operation = document["paths"]["/enqueue"]["post"]
    assert "401" in operation["responses"] and operation["security"] == [{"bearer": []}]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


@pytest.mark.parametrize(
    "run_at",
    [
        "2030-01-02T03:04:05Z",
        "2030-01-02t03:04:05z",
        "2030-01-02T03:04:05.1+05:30",
        "2030-01-02T03:04:05.123456-23:59",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-23:59",
    ],
)
async def test_every_rfc3339_time_is_accepted(
    app_client: AsyncTestClient[Any], run_at: str
) -> None:
    response = await app_client.post("/enqueue", json={"type": "test_echo", "run_at": run_at})
    assert response.status_code == 202, response.text


@pytest.mark.parametrize("run_at", ["2030-01-02T03:04:05", "2030-02-30T00:00:00Z", "2030-01-02"])
async def test_a_time_that_is_not_rfc3339_is_rejected(
    app_client: AsyncTestClient[Any], run_at: str
) -> None:
    response = await app_client.post("/enqueue", json={"type": "test_echo", "run_at": run_at})
    assert response.status_code == 422 and response.json()["field"] == "run_at"


async def test_integral_floats_count_as_integers(app_client: AsyncTestClient[Any]) -> None:
    body = {"type": "test_sync_add", "payload": {"a": 1.0, "b": 2}, "Retries": 4.0}
    response = await app_client.post("/enqueue", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["retries"] == 4
    response = await app_client.post("/enqueue", json={**body, "payload": {"a": 1.5, "b": 2}})
    assert response.status_code == 422 and response.json()["field"] == "payload.a"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b'{"type": {}}', 422, "type"),
        (b'[{"type": ["x"]}]', 422, "[0].type"),
        (b'{"type": "test_echo\\n"}', 422, "type"),
        (b'{"type": "test_echo", "queue": "q\\n"}', 422, "queue"),
        (b'{"type": "test_echo", "payload": {"x": 1e70}}', 400, "body"),
    ],
)
async def test_schema_invalid_bodies_are_rejected(
    app_client: AsyncTestClient[Any], body: bytes, status: int, field: str
) -> None:
    path = "/enqueue/batch" if body.startswith(b"[") else "/enqueue"
    response = await app_client.post(path, content=body)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field
