"""``/schedules`` routes in process (Litestar's AsyncTestClient, real Redis): create, replace,
read, pause/resume, delete, validation, the API key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from wq_testkit import REDIS_URL, TEST_PLUGIN

from workqueue.broker import BrokerConfig
from workqueue.producer import ProducerSettings, create_app
from workqueue.registry import build_registry


def _app(key_prefix: str, api_key: str | None = None) -> Any:
    settings = ProducerSettings(
        redis_url=REDIS_URL, broker=BrokerConfig(prefix=key_prefix), api_key=api_key
    )
    return create_app(settings, build_registry(only=[TEST_PLUGIN]))


@pytest.fixture
async def http(installed_test_plugin: None, key_prefix: str) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(_app(key_prefix)) as client:
        client.headers["Content-Type"] = "application/json"
        yield client


async def test_put_creates_then_replaces_and_get_lists_it(http: AsyncTestClient[Any]) -> None:
    body = {"cron": "*/5 * * * *", "type": "test_sync_add", "payload": {"a": 1, "b": 2}}
    created = await http.put("/schedules/adder", json=body)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/schedules/adder"
    view = created.json()
    assert view["name"] == "adder" and view["cron"] == "*/5 * * * *"
    assert view["timezone"] == "UTC" and view["queue"] == "default"
    assert view["source"] == "operator" and view["paused"] is False
    assert view["last_tick"] is None and view["fired"] == 0
    assert view["next_tick"].endswith(("0:00.000Z", "5:00.000Z"))
    replaced = await http.put(
        "/api/schedules/adder", json={**body, "cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"}
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["timezone"] == "Europe/Berlin"
    one = await http.get("/schedules/adder")
    assert one.status_code == 200 and one.json()["cron"] == "0 9 * * 1-5"
    listed = await http.get("/api/schedules")
    assert [s["name"] for s in listed.json()] == ["adder"]


async def test_paused_in_the_body_pauses_and_resumes(http: AsyncTestClient[Any]) -> None:
    body = {"cron": "* * * * * *", "type": "test_echo"}
    assert (await http.put("/schedules/s", json={**body, "paused": True})).status_code == 201
    view = (await http.get("/schedules/s")).json()
    assert view["paused"] is True and view["next_tick"] is None
    # absent: unchanged
    assert (await http.put("/schedules/s", json=body)).json()["paused"] is True
    resumed = await http.put("/schedules/s", json={**body, "paused": False})
    assert resumed.json()["paused"] is False and resumed.json()["next_tick"] is not None


async def test_delete_then_it_is_gone(http: AsyncTestClient[Any]) -> None:
    await http.put("/schedules/gone", json={"cron": "0 0 * * *", "type": "test_echo"})
    assert (await http.delete("/schedules/gone")).status_code == 204
    assert (await http.get("/schedules/gone")).status_code == 404
    missing = await http.delete("/api/schedules/gone")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * *"}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"type": "no_such_type"}, "type"),
        ({"payload": {"a": "x", "b": 1}}, "payload.a"),
        ({"payload": [1]}, "payload"),
        ({"queue": "a b"}, "queue"),
        ({"paused": "yes"}, "paused"),
        ({"retries": 3}, "retries"),
    ],
)
async def test_invalid_fields_are_refused_and_named(
    http: AsyncTestClient[Any], change: dict[str, Any], field: str
) -> None:
    body = {"cron": "* * * * *", "type": "test_sync_add", "payload": {"a": 1, "b": 2}, **change}
    answer = await http.put("/schedules/bad", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field
    assert (await http.get("/schedules/bad")).status_code == 404


async def test_a_bad_name_is_refused(http: AsyncTestClient[Any]) -> None:
    answer = await http.put("/schedules/a%20b", json={"cron": "* * * * *", "type": "test_echo"})
    assert answer.status_code == 400


async def test_the_api_key_is_enforced(installed_test_plugin: None, key_prefix: str) -> None:
    async with AsyncTestClient(_app(key_prefix, api_key="sesame")) as client:
        client.headers["Content-Type"] = "application/json"
        body = {"cron": "* * * * *", "type": "test_echo"}
        assert (await client.get("/schedules")).status_code == 401
        assert (await client.put("/schedules/x", json=body)).status_code == 401
        assert (await client.delete("/schedules/x")).status_code == 401
        client.headers["Authorization"] = "Bearer sesame"
        assert (await client.put("/schedules/x", json=body)).status_code == 201
        assert (await client.get("/api/schedules/x")).status_code == 200
