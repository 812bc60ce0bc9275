"""T21/T22: bad HTTP input against a real ``workqueue producer`` subprocess.

Raw sockets send what HTTP clients refuse to: a body over the size limit (with and without a
length), a ``Content-Length`` that lies in both directions, an endless chunked body, JSON
nested 10,000 deep, invalid UTF-8, NaN/Infinity/1e400, job types naming Python callables, bad
``retries`` values, and a slow-loris crowd. Each is answered with a clean 4xx (or the
connection is closed within the request deadline), never writes to Redis (counted on a
private redis-server), never imports a module named by the request (audited inside the
producer by a ``sitecustomize``), and afterwards the producer still answers ``/health`` and
enqueues a good job.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from inputkit import (
    LAST_CHUNK,
    Audit,
    assert_still_serving,
    chunk,
    post_raw,
    raw_exchange,
    redis_writes,
    request_head,
    write_audit_sitecustomize,
)
from redis_server import RedisServer
from services import Proc, Services

#: the producer's request deadline in these tests (seconds; the default is 15)
REQUEST_TIMEOUT = 2.0
MAX_BODY = 1024 * 1024  # the producer's default limit
#: job types that name Python callables or modules: none may ever be imported
CANARY_TYPES = ("os.system", "builtins.eval", "wq_canary_unknown", "wq_canary_pkg.module")


@dataclass
class Target:
    proc: Proc
    port: int
    prefix: str
    redis: redis.Redis
    audit_file: Path

    def writes(self) -> int:
        return redis_writes(self.redis)

    def still_serving(self) -> None:
        assert self.proc.alive(), self.proc.log()[-3000:]
        assert self.proc.url is not None
        assert_still_serving(self.proc.url, self.prefix, self.redis)


@pytest.fixture(scope="module")
def target(
    installed_test_plugin: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    """One producer (request deadline 2 s, import audit on) and its private redis-server."""
    tmp = tmp_path_factory.mktemp("http-input")
    (tmp / "redis").mkdir()
    server = RedisServer(tmp / "redis", appendfsync="no")
    server.start()
    prefix = f"wqin-{uuid.uuid4().hex[:8]}"
    services = Services(tmp, prefix)
    audit_file = tmp / "producer-audit.txt"
    env = {
        "WORKQUEUE_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
        **write_audit_sitecustomize(tmp / "site", audit_file),
    }
    try:
        proc = services.producer(server.url, env=env, timeout=60)
        assert proc.url is not None
        port = int(proc.url.rsplit(":", 1)[1])
        yield Target(proc, port, prefix, server.client(), audit_file)
    finally:
        services.stop_all()
        server.close()


def _no_write(target: Target, before: int) -> None:
    assert target.writes() == before, "a refused request wrote to Redis"


# --------------------------------------------------------------------------------------------
# Size limit and framing
# --------------------------------------------------------------------------------------------


def test_oversize_length_is_413_before_the_body_is_read(target: Target) -> None:
    before = target.writes()
    # Announce 2 MiB, send 10 bytes: the answer cannot wait for (or parse) the body.
    answer = raw_exchange(target.port, [request_head(length=2 * MAX_BODY) + b'{"type": "'])
    assert answer.status == 413, answer.raw[:500]
    assert answer.json() == {
        "error": "body_too_large",
        "field": None,
        "problem": f"the body is over the limit of {MAX_BODY} bytes (--max-body-bytes)",
    }
    assert answer.header("connection") == "close"
    assert answer.closed
    _no_write(target, before)
    target.still_serving()


def test_oversize_body_sent_whole_is_413(target: Target) -> None:
    before = target.writes()
    body = b'{"type": "test_echo", "payload": {"x": "' + b"a" * (2 * MAX_BODY) + b'"}}'
    answer = post_raw(target.port, body)
    assert answer.status == 413, answer.raw[:500]
    assert answer.closed
    _no_write(target, before)
    target.still_serving()


def test_chunked_body_within_the_limit_is_accepted(target: Target) -> None:
    before = target.writes()
    parts = [b'{"type": "test_echo", ', b'"payload": {"via": "chunked"}}']
    answer = raw_exchange(
        target.port,
        [request_head(chunked=True, close=True), *(chunk(p) for p in parts), LAST_CHUNK],
    )
    assert answer.status == 202, answer.raw[:500]
    body: Any = answer.json()
    assert target.redis.exists(f"{target.prefix}:{{default}}:job:{body['id']}") == 1
    assert target.writes() > before


def test_endless_chunked_body_is_cut_off_with_413(target: Target) -> None:
    before = target.writes()
    piece = chunk(b'"' + b"z" * 65534 + b'"')  # 64 KiB per chunk
    # Up to 64 MiB offered; the producer must stop reading soon after its 1 MiB limit.
    answer = raw_exchange(target.port, [request_head(chunked=True), *[piece] * 1024], timeout=60)
    assert answer.status == 413, answer.raw[:500]
    assert answer.closed
    # Loopback socket buffers hold a few MiB at most: anything near 64 MiB means it buffered.
    assert answer.sent < 16 * MAX_BODY, f"{answer.sent} bytes were accepted"
    _no_write(target, before)
    target.still_serving()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_concurrent_endless_bodies_keep_memory_bounded(target: Target) -> None:
    before_writes = target.writes()
    before = _rss_kib(target.proc.pid)
    piece = chunk(b"y" * 65536)
    big = b"x" * (2 * MAX_BODY)

    def endless(n: int) -> int | None:
        if n % 2:
            return post_raw(target.port, big).status
        parts = [request_head(chunked=True), *[piece] * 256]  # 16 MiB offered
        return raw_exchange(target.port, parts, timeout=60).status

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(endless, range(40)))
    after = _rss_kib(target.proc.pid)
    assert statuses == [413] * 40
    # 20 chunked streams of 16 MiB buffered would be 320 MiB; the cut-off keeps it near 1 MiB
    # per request in flight.
    assert after - before < 96 * 1024, f"RSS grew from {before} to {after} KiB"
    _no_write(target, before_writes)
    target.still_serving()
    print(f"\nFIGURES 40 concurrent oversize bodies: producer RSS {before} -> {after} KiB")


def test_content_length_larger_than_sent_is_cut_off(target: Target) -> None:
    before = target.writes()
    body = b'{"type": "test_echo"}'
    answer = raw_exchange(target.port, [request_head(length=len(body) + 100) + body], timeout=30)
    # No answer is possible (the body never completes); the connection is closed by the
    # request deadline, not left open until the client gives up.
    assert answer.closed, f"still open after {answer.elapsed_s:.1f}s"
    assert answer.status in (None, 408), answer.raw[:300]
    _no_write(target, before)
    target.still_serving()


@pytest.mark.parametrize(
    "rest",
    [
        pytest.param(b'"payload": {}}', id="json-remainder"),
        pytest.param(request_head(length=21) + b'{"type": "test_echo"}', id="smuggled-enqueue"),
    ],
)
def test_content_length_smaller_than_sent_enqueues_nothing(target: Target, rest: bytes) -> None:
    before = target.writes()
    first = b'{"type": "test_echo", '
    answer = raw_exchange(target.port, [request_head(length=len(first)) + first + rest])
    # The truncated body is malformed JSON (400); what follows it is not served as a request.
    assert answer.statuses == [400], answer.raw[:800]
    assert answer.closed
    _no_write(target, before)
    target.still_serving()


# --------------------------------------------------------------------------------------------
# Bodies that are not plain JSON
# --------------------------------------------------------------------------------------------

DEEP = 10_000
ECHO = b'{"type": "test_echo", "payload": {"n": %s}}'
SURROGATE = b'{"type": "test_echo", "payload": {"s": "\xed\xa0\x80"}}'


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        pytest.param(b"[" * DEEP + b"]" * DEEP, "nested", id="array-10k-deep"),
        pytest.param(b'{"a":' * DEEP + b"1" + b"}" * DEEP, "nested", id="object-10k-deep"),
        pytest.param(
            b'{"type": "test_echo", "payload": ' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}",
            "nested",
            id="payload-10k-deep",
        ),
        pytest.param(b'{"type": "test_echo", "payload": {"s": "\xff\xfe"}}', "UTF-8", id="utf8"),
        pytest.param(b'{"type": "test_echo\xc0"}', "UTF-8", id="utf8-overlong"),
        pytest.param(SURROGATE, "UTF-8", id="utf8-surrogate"),
        pytest.param(b'{"type": "test_echo", "payload": {"n": NaN}}', "not valid JSON", id="nan"),
        pytest.param(ECHO % b"Infinity", "not valid JSON", id="infinity"),
        pytest.param(ECHO % b"-Infinity", "not valid JSON", id="-infinity"),
        pytest.param(b'{"type": "test_echo", "payload": {"n": 1e400}}', "range", id="1e400"),
        pytest.param(b'{"type": "test_echo", "retries": 1e400}', "range", id="retries-1e400"),
        pytest.param(b'{"type": "test_echo", "payload": {"n": 1e300}}', "range", id="1e300"),
    ],
)
def test_non_json_bodies_are_400(target: Target, body: bytes, problem: str) -> None:
    before = target.writes()
    answer = post_raw(target.port, body)
    assert answer.status == 400, answer.raw[:500]
    error: Any = answer.json()
    assert error["error"] == "malformed_body"
    assert problem in error["problem"], error
    assert "Traceback" not in answer.raw.decode("latin-1")
    _no_write(target, before)
    target.still_serving()


# --------------------------------------------------------------------------------------------
# Valid JSON, invalid task
# --------------------------------------------------------------------------------------------


def test_types_naming_python_callables_are_422_and_never_imported(target: Target) -> None:
    before = target.writes()
    with httpx.Client(base_url=target.proc.url or "", timeout=15) as http:
        for name in CANARY_TYPES:
            answer = http.post("/enqueue", json={"type": name, "payload": {"cmd": "id"}})
            assert answer.status_code == 422, answer.text
            error = answer.json()
            assert error["error"] == "unknown_job_type"
            assert error["field"] == "type"
            assert "test_echo" in error["known"]
        batch = http.post("/enqueue/batch", json=[{"type": "test_echo"}, {"type": "os.system"}])
        assert batch.status_code == 422, batch.text
        assert batch.json()["field"] == "[1].type"
    _no_write(target, before)
    target.still_serving()
    audit = Audit.read(target.audit_file)
    audit.assert_working()
    audit.assert_never_touched(*CANARY_TYPES)


@pytest.mark.parametrize("name", ["retries", "Retries"])
@pytest.mark.parametrize("value", [-1, 10**9, 1e9, True, "3", 2.5, [3], {"n": 3}], ids=repr)
def test_bad_retries_are_422_naming_the_field(target: Target, name: str, value: object) -> None:
    before = target.writes()
    with httpx.Client(base_url=target.proc.url or "", timeout=15) as http:
        answer = http.post("/enqueue", json={"type": "test_echo", name: value})
    assert answer.status_code == 422, answer.text
    error = answer.json()
    assert error["error"] == "invalid_task"
    assert error["field"] == "retries"  # the canonical name, also for the Retries alias
    assert error["problem"]
    _no_write(target, before)


# --------------------------------------------------------------------------------------------
# Slow clients
# --------------------------------------------------------------------------------------------

LORIS = 120
IDLE = 40
GOOD_REQUESTS = 30


async def _loris(port: int, closed_after: list[float], *, idle: bool) -> None:
    """Send a request head a byte every 0.2 s (or nothing at all) until the server hangs up
    (recorded) or 40 s pass (not recorded)."""
    head = request_head(length=20)
    started = time.monotonic()
    server_closed = False
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for index in range(200):
            if not idle:
                writer.write(head[index % len(head) : index % len(head) + 1])
                await writer.drain()
            try:
                async with asyncio.timeout(0.2):
                    data = await reader.read(1)
            except TimeoutError:
                continue
            if data == b"":
                server_closed = True
                break
    except (ConnectionError, OSError):
        server_closed = True
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    if server_closed:
        closed_after.append(time.monotonic() - started)


async def test_slow_loris_does_not_stop_the_producer(target: Target) -> None:
    closed_after: list[float] = []
    attackers = [
        asyncio.create_task(_loris(target.port, closed_after, idle=n < IDLE))
        for n in range(LORIS + IDLE)
    ]
    await asyncio.sleep(0.5)  # every attacker connected and trickling
    latencies = []
    async with httpx.AsyncClient(base_url=target.proc.url or "", timeout=20) as http:
        for _ in range(GOOD_REQUESTS):
            started = time.monotonic()
            answer = await http.post("/enqueue", json={"type": "test_echo"})
            latencies.append(time.monotonic() - started)
            assert answer.status_code == 202, answer.text
    await asyncio.wait_for(asyncio.gather(*attackers), timeout=90)
    # Every slow or silent connection was closed by the producer (within its 2 s deadline;
    # an attacker gives up by itself only after 40 s).
    assert len(closed_after) == LORIS + IDLE
    target.still_serving()
    print(
        f"\nFIGURES slow-loris: {LORIS} trickling + {IDLE} silent connections; "
        f"{GOOD_REQUESTS} good enqueues all 202, max {max(latencies):.3f}s; "
        f"attackers cut off after {min(closed_after):.2f}-{max(closed_after):.2f}s"
    )


def test_producer_log_has_no_error_after_all_that(target: Target) -> None:
    """Runs last in this module: no bad request above made the producer log an unexpected
    error or a traceback (a disconnect mid-body included)."""
    log = target.proc.log()
    assert "producer on http" in log
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]
    assert not [line for line in log.splitlines() if " | ERROR | " in line], log[-3000:]
