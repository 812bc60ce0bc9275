"""End-to-end tests of ``workqueue producer``: a real subprocess, exercised over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wq_testkit import REDIS_URL, TEST_PLUGIN

SEED_TASK = {
    "type": "test_echo",
    "Retries": 3,
    "payload": {"to": "x@example.com", "subject": "testing producer"},
}
API_KEY = "s3cret-api-key-for-tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Producer:
    proc: subprocess.Popen[bytes]
    url: str
    prefix: str
    log_file: Path
    stderr_file: Path

    def http(self, **kwargs: Any) -> httpx.Client:
        # raw bodies (content=...) are declared JSON too, as the producer requires
        headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
        return httpx.Client(base_url=self.url, timeout=10, headers=headers, **kwargs)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
                return None
        return self.proc.returncode


def start_producer(
    tmp_path: Path, prefix: str, env: dict[str, str] | None = None, wait: bool = True
) -> Producer:
    port = free_port()
    name = uuid.uuid4().hex[:6]
    log_file = tmp_path / f"producer-{name}.log"
    stderr_file = tmp_path / f"producer-{name}.stderr"
    full_env = {
        **{k: v for k, v in os.environ.items() if k != "WORKQUEUE_API_KEY"},
        "WORKQUEUE_PLUGINS": TEST_PLUGIN,
        "WORKQUEUE_KEY_PREFIX": prefix,
        "WORKQUEUE_REDIS_URL": REDIS_URL,
        "WORKQUEUE_LOG_FILE": str(log_file),
        **(env or {}),
    }
    with stderr_file.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workqueue", "producer", "--port", str(port)],
            env=full_env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    producer = Producer(proc, f"http://127.0.0.1:{port}", prefix, log_file, stderr_file)
    if wait:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"producer exited: {stderr_file.read_text()}")
            try:
                if httpx.get(f"{producer.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                producer.stop()
                raise AssertionError(f"producer did not start: {stderr_file.read_text()}")
            time.sleep(0.1)
    return producer


def _delete_prefix(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="module")
def producer(
    installed_test_plugin: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Producer]:
    """One producer for the module's read-mostly tests, on a key prefix of its own."""
    prefix = f"wqtest-{uuid.uuid4().hex[:10]}"
    started = start_producer(
        tmp_path_factory.mktemp("producer"), prefix, {"WORKQUEUE_BATCH_LIMIT": "50"}
    )
    yield started
    started.stop()
    _delete_prefix(prefix)


@pytest.fixture
def http(producer: Producer) -> Iterator[httpx.Client]:
    with producer.http() as client:
        yield client


async def read_job(prefix: str, job_id: str) -> Any:
    from workqueue.broker import Broker, BrokerConfig
    from workqueue.broker.connection import create_redis

    broker = Broker(create_redis(REDIS_URL), BrokerConfig(prefix=prefix))
    try:
        return await broker.get_job(job_id)
    finally:
        await broker.redis.aclose()


def assert_error(response: httpx.Response, status: int, field: str | None = None) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"error", "field", "problem"}, body
    assert "Traceback" not in response.text
    if field is not None:
        assert body["field"] == field, body
    return body


# --- enqueue ------------------------------------------------------------------------------


async def test_seed_request_is_enqueued(producer: Producer, http: httpx.Client) -> None:
    response = http.post("/api/enqueue", json=SEED_TASK)
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"id", "type", "queue", "status", "retries", "enqueued_at"}
    assert body["type"] == "test_echo"
    assert body["retries"] == 3
    assert body["queue"] == "default"
    assert body["status"] == "queued"
    assert response.headers["location"] == f"/jobs/{body['id']}"
    info = await read_job(producer.prefix, body["id"])
    assert info.type == "test_echo"
    assert info.retries == 3
    assert info.status == "queued"


def test_enqueue_plain_route_and_delay(http: httpx.Client) -> None:
    response = http.post("/enqueue", json={"type": "test_echo", "delay": 60, "queue": "q1"})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "scheduled"
    assert response.json()["queue"] == "q1"


def test_get_job_and_404(http: httpx.Client) -> None:
    job_id = http.post("/enqueue", json=SEED_TASK).json()["id"]
    for path in (f"/jobs/{job_id}", f"/api/jobs/{job_id}"):
        response = http.get(path)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {
            "id",
            "type",
            "queue",
            "status",
            "attempts",
            "retries",
            "enqueued_at",
            "started_at",
            "finished_at",
            "result",
            "error",
            "progress",
            "history",
        }
        assert body["id"] == job_id
        assert body["status"] == "queued"
        assert body["attempts"] == 0
    assert_error(http.get("/jobs/doesnotexist"), 404, "id")
    assert_error(http.get("/api/jobs/" + "x" * 500), 404)
    assert_error(http.get("/no/such/route"), 404)


async def test_batch(producer: Producer, http: httpx.Client) -> None:
    tasks = [
        {"type": "test_echo", "payload": {"n": 1}},
        {"type": "test_sync_add", "payload": {"a": 1, "b": 2}, "retries": 0},
        {"type": "test_echo", "queue": "other"},
    ]
    for path in ("/enqueue/batch", "/api/enqueue/batch"):
        response = http.post(path, json=tasks)
        assert response.status_code == 202, response.text
        answers = response.json()
        assert [a["type"] for a in answers] == ["test_echo", "test_sync_add", "test_echo"]
        assert [a["queue"] for a in answers] == ["default", "default", "other"]
        assert answers[1]["retries"] == 0
        for answer in answers:
            assert (await read_job(producer.prefix, answer["id"])).status == "queued"


def test_batch_is_all_or_nothing(producer: Producer, http: httpx.Client) -> None:
    marker = f"q{uuid.uuid4().hex[:8]}"
    tasks = [{"type": "test_echo", "queue": marker}] * 3 + [{"type": "nope", "queue": marker}]
    body = assert_error(http.post("/enqueue/batch", json=tasks), 422, "[3].type")
    assert "test_echo" in body["known"]
    body = assert_error(
        http.post(
            "/enqueue/batch", json=[{"type": "test_echo"}, {"type": "test_echo", "retries": -1}]
        ),
        422,
        "[1].retries",
    )
    assert_error(
        http.post(
            "/enqueue/batch",
            json=[{"type": "test_echo"}, {"type": "test_sync_add", "payload": {"a": "x", "b": 1}}],
        ),
        422,
        "[1].payload.a",
    )
    assert_error(http.post("/enqueue/batch", json=[{"type": "test_echo"}, {"x": 1}]), 422, "[1].x")
    assert_error(http.post("/enqueue/batch", json=[{}]), 422, "[0].type")
    assert_error(http.post("/enqueue/batch", json=[3]), 422, "[0]")
    assert_error(http.post("/enqueue/batch", json={"type": "test_echo"}), 422, "body")
    assert_error(http.post("/enqueue/batch", json=[{"type": "test_echo"}] * 51), 422, "body")
    # nothing of the rejected batches was written
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert list(client.scan_iter(match=f"{producer.prefix}:*{marker}*")) == []
    finally:
        client.close()
    assert http.post("/enqueue/batch", json=[]).json() == []


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b'{"type": "test_echo",}',
        b"NaN",
        b'{"type": "test_echo", "timeout": NaN}',
        b'{"type": "test_echo", "timeout": 1e400}',
        b'{"type": "test_echo", "payload": {"n": 123456789012345678901234567890}}',
        b'{"type": "test_echo", "payload": {"s": "\xff\xfe"}}',
        b'{"type": "test_echo", "payload": {"s": "\\ud800"}}',
        b'{"type": "test_echo", "payload": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_malformed_bodies_are_400(http: httpx.Client, raw: bytes) -> None:
    for path in ("/enqueue", "/enqueue/batch"):
        assert_error(http.post(path, content=raw), 400, "body")


def test_oversize_body_is_413(http: httpx.Client) -> None:
    big = json.dumps({"type": "test_echo", "payload": {"s": "x" * (1024 * 1024 + 10)}})
    assert_error(http.post("/enqueue", content=big), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        for _ in range(40):
            yield b" " * 65536

    assert_error(http.post("/enqueue/batch", content=chunks()), 413)


def test_unknown_type_lists_known_types(http: httpx.Client) -> None:
    body = assert_error(http.post("/enqueue", json={"type": "send_fax"}), 422, "type")
    assert body["error"] == "unknown_job_type"
    assert "test_echo" in body["known"] and "test_sync_add" in body["known"]
    assert "test_echo" in body["problem"]


def test_payload_schema_failure_names_the_field(http: httpx.Client) -> None:
    response = http.post("/enqueue", json={"type": "test_sync_add", "payload": {"a": "1", "b": 2}})
    body = assert_error(response, 422, "payload.a")
    assert body["error"] == "invalid_payload"
    assert_error(http.post("/enqueue", json={"type": "test_echo", "payload": [1]}), 422, "payload")


@pytest.mark.parametrize("value", [-1, "3", True, 1.5, None, 10_000])
@pytest.mark.parametrize("name", ["retries", "Retries"])
def test_bad_retries(http: httpx.Client, name: str, value: Any) -> None:
    response = http.post("/enqueue", json={"type": "test_echo", name: value})
    if value is None:  # null means "the default"
        assert response.status_code == 202
    else:
        assert_error(response, 422, "retries")


@pytest.mark.parametrize(
    ("task", "field"),
    [
        ({}, "type"),
        ({"type": 5}, "type"),
        ({"type": "bad type!"}, "type"),
        ({"type": "test_echo", "queue": ""}, "queue"),
        ({"type": "test_echo", "timeout": "5"}, "timeout"),
        ({"type": "test_echo", "delay": -1}, "delay"),
        ({"type": "test_echo", "run_at": "tomorrow"}, "run_at"),
        ({"type": "test_echo", "delay": 1, "run_at": "2030-01-01T00:00:00Z"}, "delay"),
        ({"type": "test_echo", "retries": 1, "Retries": 1}, "retries"),
        ({"type": "test_echo", "priority": 10}, "priority"),
    ],
)
def test_invalid_fields_are_422(http: httpx.Client, task: dict[str, Any], field: str) -> None:
    assert_error(http.post("/enqueue", json=task), 422, field)


def test_non_object_body_is_422(http: httpx.Client) -> None:
    for raw in (b"[]", b"3", b'"x"', b"null"):
        assert_error(http.post("/enqueue", content=raw), 422, "body")


def test_idempotency_key(http: httpx.Client) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = http.post("/enqueue", json=SEED_TASK, headers=key)
    assert first.status_code == 202, first.text
    again = http.post("/enqueue", json=SEED_TASK, headers=key)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    other = {**SEED_TASK, "payload": {"to": "y@example.com"}}
    body = assert_error(http.post("/enqueue", json=other, headers=key), 422, "Idempotency-Key")
    assert body["error"] == "idempotency_conflict"
    assert_error(
        http.post("/enqueue", json=SEED_TASK, headers={"Idempotency-Key": "k" * 300}),
        422,
        "idempotency_key",
    )


def test_batch_idempotency_key(http: httpx.Client) -> None:
    # Given a batch posted with one Idempotency-Key for the whole batch
    key = {"Idempotency-Key": uuid.uuid4().hex}
    batch = [SEED_TASK, {**SEED_TASK, "payload": {"to": "b@example.com"}}]
    first = http.post("/enqueue/batch", json=batch, headers=key)
    assert first.status_code == 202, first.text
    # When the same batch is posted again (a retry after a timeout or a 503)
    again = http.post("/enqueue/batch", json=batch, headers=key)
    # Then the same jobs come back, nothing new is written
    assert again.status_code == 200, again.text
    assert [j["id"] for j in again.json()] == [j["id"] for j in first.json()]
    assert len({j["id"] for j in first.json()}) == 2
    # and an item that changed under the same key is a conflict
    changed = [SEED_TASK, {**SEED_TASK, "payload": {"to": "c@example.com"}}]
    body = assert_error(http.post("/enqueue/batch", json=changed, headers=key), 422, None)
    assert body["error"] == "idempotency_conflict"
    # while the same key on another batch size still answers item by item
    longer = http.post("/enqueue/batch", json=[*batch, SEED_TASK], headers=key)
    assert longer.status_code == 202
    assert [j["id"] for j in longer.json()][:2] == [j["id"] for j in first.json()]


def test_openapi_and_health(http: httpx.Client) -> None:
    schema = http.get("/schema/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/enqueue", "/api/enqueue", "/enqueue/batch", "/health", "/ready"} <= set(paths)
    request_body = paths["/enqueue"]["post"]["requestBody"]["content"]["application/json"]
    assert request_body["schema"]["required"] == ["type"]
    assert http.get("/schema").status_code == 200
    assert http.get("/health").json() == {"status": "ok"}
    assert http.get("/ready").json() == {"status": "ready"}


def test_log_has_one_line_per_enqueue_and_no_payload(
    producer: Producer, http: httpx.Client
) -> None:
    secret = f"payload-secret-{uuid.uuid4().hex}"
    job_id = http.post("/enqueue", json={"type": "test_echo", "payload": {"v": secret}}).json()[
        "id"
    ]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        text = producer.log_file.read_text() if producer.log_file.exists() else ""
        if job_id in text:
            break
        time.sleep(0.05)
    lines = [line for line in text.splitlines() if job_id in line]
    assert len(lines) == 1 and "enqueued" in lines[0] and "type=test_echo" in lines[0]
    assert secret not in text


# --- property test ------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
task_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["test_echo", "test_sync_add", "nope", "", "a" * 200])},
    optional={
        "payload": json_values,
        "retries": json_values,
        "Retries": json_values,
        "queue": st.sampled_from(["default", "q2", "", "bad queue"]) | json_values,
        "delay": json_values,
        "run_at": st.sampled_from(["2030-01-01T00:00:00Z", "2030-01-01", "x"]) | json_values,
        "timeout": json_values,
    },
)


def test_fuzz_never_5xx(http: httpx.Client) -> None:
    bodies = (
        json_values.map(lambda v: json.dumps(v).encode())
        | task_like.map(lambda v: json.dumps(v).encode())
        | st.lists(task_like, max_size=5).map(lambda v: json.dumps(v).encode())
        | st.binary(max_size=300)
    )

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(body=bodies, path=st.sampled_from(["/enqueue", "/enqueue/batch", "/api/enqueue"]))
    def check(body: bytes, path: str) -> None:
        response = http.post(path, content=body)
        assert response.status_code < 500, (body, response.text)
        assert response.headers["content-type"].startswith("application/json")

    check()
    assert http.get("/health").status_code == 200


# --- API key, Redis down, SIGTERM ---------------------------------------------------------


def test_api_key(installed_test_plugin: None, key_prefix: str, tmp_path: Path) -> None:
    producer = start_producer(tmp_path, key_prefix, {"WORKQUEUE_API_KEY": API_KEY})
    try:
        with producer.http() as http:
            assert http.get("/health").status_code == 200
            for method, path in [
                ("POST", "/enqueue"),
                ("POST", "/api/enqueue/batch"),
                ("GET", "/jobs/x"),
                ("GET", "/ready"),
                ("GET", "/schema/openapi.json"),
            ]:
                assert_error(http.request(method, path, json=SEED_TASK), 401)
            for wrong in ("", "Bearer", "Bearer nope", f"Basic {API_KEY}", f"Bearer {API_KEY}x"):
                response = http.post("/enqueue", json=SEED_TASK, headers={"Authorization": wrong})
                assert_error(response, 401)
            auth = {"Authorization": f"Bearer {API_KEY}"}
            response = http.post("/api/enqueue", json=SEED_TASK, headers=auth)
            assert response.status_code == 202, response.text
            assert http.get(response.headers["location"], headers=auth).status_code == 200
            assert http.get("/ready", headers=auth).status_code == 200
    finally:
        assert producer.stop() == 0
    logged = producer.log_file.read_text() + producer.stderr_file.read_text()
    assert API_KEY not in logged


def _assert_unavailable(producer: Producer) -> None:
    with producer.http() as http:
        assert http.get("/health").status_code == 200
        for method, path, body in [
            ("GET", "/ready", None),
            ("POST", "/enqueue", SEED_TASK),
            ("POST", "/api/enqueue", {"type": "known_only_to_workers"}),
            ("POST", "/enqueue/batch", [SEED_TASK, SEED_TASK]),
            ("GET", "/jobs/abc", None),
        ]:
            started = time.monotonic()
            response = http.request(method, path, json=body)
            elapsed = time.monotonic() - started
            assert_error(response, 503)
            assert response.headers["retry-after"] == "1"
            assert elapsed < 3, (path, elapsed)
        # a bad request is still answered 4xx without Redis
        assert_error(http.post("/enqueue", content=b"{"), 400)


def test_redis_refusing_connections_is_503(
    installed_test_plugin: None, key_prefix: str, tmp_path: Path
) -> None:
    env = {"WORKQUEUE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    producer = start_producer(tmp_path, key_prefix, env)
    try:
        _assert_unavailable(producer)
    finally:
        assert producer.stop() == 0


def test_redis_not_answering_is_503(
    installed_test_plugin: None, key_prefix: str, tmp_path: Path
) -> None:
    with socket.socket() as silent:  # accepts TCP connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(100)
        env = {"WORKQUEUE_REDIS_URL": f"redis://127.0.0.1:{silent.getsockname()[1]}/0"}
        producer = start_producer(tmp_path, key_prefix, env)
        try:
            _assert_unavailable(producer)
        finally:
            assert producer.stop() == 0


def test_sigterm_stops_cleanly(
    installed_test_plugin: None, key_prefix: str, tmp_path: Path
) -> None:
    producer = start_producer(tmp_path, key_prefix)
    with producer.http() as http:
        assert http.post("/enqueue", json=SEED_TASK).status_code == 202
    assert producer.stop() == 0
    assert "producer stopped" in producer.log_file.read_text()
