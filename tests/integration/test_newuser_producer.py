"""Issue 11 against a real producer process, real Redis and real HTTP: no cross-site enqueue,
JSON bodies only, one time format, error texts that say what they mean, an offline /schema,
and the ``enqueued`` line of jobs written through ``Client``."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from loguru import logger
from test_producer import Producer, assert_error, start_producer
from wq_testkit import TEST_PLUGIN, WorkerProcs

pytestmark = pytest.mark.slow

TASK = {"type": "test_echo", "payload": {"secret": "do-not-log-me-7f3a"}}
#: the one time format of the HTTP answers
UTC_MS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


@pytest.fixture
def producer(installed_test_plugin: None, key_prefix: str, tmp_path: Path) -> Iterator[Producer]:
    started = start_producer(tmp_path, key_prefix)
    yield started
    started.stop()


@pytest.fixture
def http(producer: Producer) -> Iterator[httpx.Client]:
    # no default Content-Type: each test states exactly what it sends
    with httpx.Client(base_url=producer.url, timeout=10) as client:
        yield client


def enqueued_ids(producer: Producer) -> list[str]:
    time.sleep(0.3)  # the producer's log lines go through a writer thread
    text = producer.log_file.read_text() if producer.log_file.exists() else ""
    return re.findall(r"job=([0-9a-f]{32}) .*\| enqueued", text)


# --- item 2: JSON only, no cross-site requests -------------------------------------------------


@pytest.mark.parametrize("path", ["/enqueue", "/api/enqueue", "/enqueue/batch"])
@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_a_body_that_is_not_declared_json_is_415(
    producer: Producer, http: httpx.Client, path: str, content_type: str | None
) -> None:
    # A browser sends these three kinds cross-site without asking first (no CORS preflight)
    body = b'[{"type": "test_echo"}]' if path.endswith("batch") else b'{"type": "test_echo"}'
    headers = {"Content-Type": content_type} if content_type else {}
    answer = http.post(path, content=body, headers=headers)
    error = assert_error(answer, 415)
    assert error["error"] == "unsupported_media_type"
    assert "application/json" in error["problem"]
    assert enqueued_ids(producer) == []


def test_json_with_a_charset_is_accepted(http: httpx.Client) -> None:
    answer = http.post(
        "/enqueue",
        content=b'{"type": "test_echo"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert answer.status_code == 202, answer.text


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},  # a sandboxed frame or a file:// page
        {"Origin": "http://127.0.0.1:1"},  # another server on the same host: another origin
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
    ],
)
@pytest.mark.parametrize("path", ["/enqueue", "/enqueue/batch"])
def test_cross_origin_browser_requests_are_403(
    producer: Producer, http: httpx.Client, headers: dict[str, str], path: str
) -> None:
    body: Any = [TASK] if path.endswith("batch") else TASK
    error = assert_error(http.post(path, json=body, headers=headers), 403)
    assert error["error"] == "forbidden"
    assert enqueued_ids(producer) == []


def test_same_origin_pages_and_non_browser_clients_still_enqueue(
    producer: Producer, http: httpx.Client
) -> None:
    own = producer.url  # http://127.0.0.1:PORT, what a page served by the producer sends
    same = {"Origin": own, "Sec-Fetch-Site": "same-origin"}
    assert http.post("/enqueue", json=TASK, headers=same).status_code == 202
    assert http.post("/enqueue", json=TASK, headers={"Sec-Fetch-Site": "none"}).status_code == 202
    assert http.post("/enqueue", json=TASK).status_code == 202  # curl, a service: no headers
    # reading is not state-changing (and a browser cannot read the answer cross-site)
    assert http.get("/health", headers={"Origin": "http://evil.example"}).status_code == 200


def test_the_openapi_document_states_403_and_415(http: httpx.Client) -> None:
    document = http.get("/schema/openapi.json").json()
    for path in ("/enqueue", "/enqueue/batch"):
        assert {"403", "415"} <= set(document["paths"][path]["post"]["responses"])


# --- item 6: one time format, messages, /schema, enqueued lines ----------------------------------


def test_every_answer_gives_times_in_utc_with_milliseconds_and_z(
    producer: Producer, http: httpx.Client, workers: WorkerProcs
) -> None:
    single = http.post("/enqueue", json=TASK)
    assert single.status_code == 202
    assert UTC_MS.fullmatch(single.json()["enqueued_at"]), single.json()
    batch = http.post("/enqueue/batch", json=[TASK, TASK])
    assert [UTC_MS.fullmatch(j["enqueued_at"]) is not None for j in batch.json()] == [True, True]
    workers.start()
    deadline = time.monotonic() + 30
    while (job := http.get(f"/jobs/{single.json()['id']}").json())["status"] != "completed":
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    for name in ("enqueued_at", "started_at", "finished_at"):
        assert UTC_MS.fullmatch(job[name]), job
    assert job["enqueued_at"] == single.json()["enqueued_at"]  # the same moment, the same text
    queued = http.get(f"/api/jobs/{batch.json()[0]['id']}").json()
    assert UTC_MS.fullmatch(queued["enqueued_at"]), queued


def test_the_413_answer_names_the_limit(
    installed_test_plugin: None, key_prefix: str, tmp_path: Path
) -> None:
    producer = start_producer(tmp_path, key_prefix, {"WORKQUEUE_MAX_BODY_BYTES": "2000"})
    try:
        with httpx.Client(base_url=producer.url, timeout=10) as http:
            body = {"type": "test_echo", "payload": {"x": "y" * 3000}}
            error = assert_error(http.post("/enqueue", json=body), 413)
        assert "2000 bytes" in error["problem"], error
    finally:
        producer.stop()


def test_numbers_in_messages_are_written_out(http: httpx.Client) -> None:
    error = assert_error(http.post("/enqueue", json={**TASK, "delay": -1}), 422, "delay")
    assert "31536000" in error["problem"] and "e+" not in error["problem"], error
    error = assert_error(http.post("/enqueue", json={**TASK, "timeout": 0}), 422, "timeout")
    assert "between 0.001 and 86400" in error["problem"], error


def test_schema_page_loads_nothing_from_other_hosts(http: httpx.Client) -> None:
    page = http.get("/schema")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/schema/openapi.json" in page.text
    urls = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page.text, re.IGNORECASE)
    assert urls and all(url.startswith("/") and not url.startswith("//") for url in urls), urls
    assert "http://" not in page.text and "https://" not in page.text and "<script" not in page.text
    assert http.get("/schema/openapi.json").json()["paths"]["/enqueue"]
    assert http.get("/schema/swagger").status_code == 404  # the CDN viewers are gone


async def test_client_enqueues_log_one_enqueued_line_per_job_without_payload(
    installed_test_plugin: None, key_prefix: str
) -> None:
    from wq_testkit import REDIS_URL

    from workqueue.broker import BrokerConfig
    from workqueue.client import Client, TaskSpec
    from workqueue.registry import build_registry

    lines: list[Any] = []
    sink = logger.add(lines.append, level="INFO", format="{message} {extra}")
    try:
        async with Client.from_url(
            REDIS_URL,
            registry=build_registry(only=[TEST_PLUGIN]),
            config=BrokerConfig(prefix=key_prefix),
        ) as client:
            one = await client.enqueue("test_echo", TASK["payload"])
            many = await client.enqueue_many(
                [("test_echo", TASK["payload"]), TaskSpec("test_echo", TASK["payload"])]
            )
            keyed = await client.enqueue("test_echo", TASK["payload"], idempotency_key="k1")
            again = await client.enqueue("test_echo", TASK["payload"], idempotency_key="k1")
            assert again.duplicate
    finally:
        logger.remove(sink)
    text = "".join(str(line) for line in lines)
    assert "do-not-log-me" not in text
    enqueued = [line.record for line in lines if line.record["message"] == "enqueued"]
    expected = [one.id, *(job.id for job in many), keyed.id]  # the repeat is no new job
    assert [record["extra"]["job_id"] for record in enqueued] == expected
    assert all(record["extra"]["type"] == "test_echo" for record in enqueued)
    duplicates = [line.record for line in lines if line.record["message"].startswith("duplicate")]
    assert [record["extra"]["job_id"] for record in duplicates] == [again.id]


def test_the_producer_still_logs_each_job_once(producer: Producer, http: httpx.Client) -> None:
    single = http.post("/enqueue", json=TASK).json()["id"]
    batch = [job["id"] for job in http.post("/enqueue/batch", json=[TASK, TASK]).json()]
    assert enqueued_ids(producer) == [single, *batch]
    assert "do-not-log-me" not in producer.log_file.read_text()


def test_sync_client_enqueues_log_their_line_too(
    installed_test_plugin: None, key_prefix: str
) -> None:
    from wq_testkit import REDIS_URL

    from workqueue.broker import BrokerConfig
    from workqueue.client import SyncClient
    from workqueue.registry import build_registry

    lines: list[Any] = []
    sink = logger.add(lines.append, level="INFO", format="{message}")
    client = SyncClient.from_url(
        REDIS_URL,
        registry=build_registry(only=[TEST_PLUGIN]),
        config=BrokerConfig(prefix=key_prefix),
    )
    try:
        first = client.enqueue("test_echo", {})
        second = client.enqueue_many([("test_echo", {})])[0]
    finally:
        client.close()
        logger.remove(sink)
    ids = [line.record["extra"]["job_id"] for line in lines if line.record["message"] == "enqueued"]
    assert ids == [first.id, second.id]
