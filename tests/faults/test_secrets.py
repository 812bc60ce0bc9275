"""T29: secrets never leak, and user strings cannot forge log lines (CWE-117).

A producer with an API key and a worker with an SMTP password, a webhook signing secret and a
Redis password (a private redis-server with ``requirepass``) run send_email, http_webhook and
test jobs whose payloads hold secret-looking values (passwords, API keys, an Authorization
header, a token in a URL query). The jobs fail: an SMTP server that refuses the login, a
webhook receiver that answers 400 echoing every header and the body back, a closed port, a
handler error; requests with a wrong API key get 401. Then every place an operator or an
attacker could read is searched for every secret value: both processes' log files and stderr,
every Redis key of the installation but the payloads themselves, ``/metrics`` (JSON and
Prometheus), the 4xx answers, and the CLI (``jobs show``/``jobs list --json``, ``stats``, an
error with a wrong Redis password).

A handler error holding CR/LF, NEL and U+2028 followed by a fake event must stay inside its
own log line.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import redis
from inputkit import run_cli, wait_for, write_forge_plugin
from redis_server import RedisServer, free_port
from services import Proc, Services, wait_http

RedisFactory = Callable[..., RedisServer]

API_KEY = "apikey-SECRET-1a2b3c4d"
WRONG_KEY = "guessed-SECRET-5e6f7a8b"
SMTP_USER = "mailer"
SMTP_PASSWORD = "smtp-SECRET-9c0d1e2f"
WEBHOOK_KEY = b"hook-SECRET-signing-key-123"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(WEBHOOK_KEY).decode()
REDIS_PASSWORD = "redis-SECRET-3a4b5c6d"
WRONG_REDIS_PASSWORD = "redis-SECRET-wrong-7e8f"
PAYLOAD_PASSWORD = "payload-SECRET-password-01"
PAYLOAD_API_KEY = "payload-SECRET-apikey-02"
HEADER_TOKEN = "header-SECRET-bearer-03"
URL_TOKEN = "url-SECRET-token-04"
EMAIL_SECRET = "email-SECRET-body-05"

SECRETS = {
    "api key": API_KEY,
    "wrong api key": WRONG_KEY,
    "smtp password": SMTP_PASSWORD,
    "smtp AUTH PLAIN": base64.b64encode(f"\0{SMTP_USER}\0{SMTP_PASSWORD}".encode()).decode(),
    "smtp AUTH LOGIN": base64.b64encode(SMTP_PASSWORD.encode()).decode(),
    "webhook secret": WEBHOOK_SECRET,
    "webhook key": base64.b64encode(WEBHOOK_KEY).decode(),
    "webhook key (raw)": WEBHOOK_KEY.decode(),
    "redis password": REDIS_PASSWORD,
    "wrong redis password": WRONG_REDIS_PASSWORD,
    "payload password": PAYLOAD_PASSWORD,
    "payload api_key": PAYLOAD_API_KEY,
    "Authorization header": HEADER_TOKEN,
    "url token": URL_TOKEN,
    "email body": EMAIL_SECRET,
}
#: what a log line starts with (a traceback's continuation lines start with "  | ")
EVENT_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \| |  \| )")
FORGED = "INFO | fake"
FORGE_MESSAGE = (
    f"boom\n{FORGED}\r\n2026-01-01T00:00:00.000Z | INFO | worker | w | job=x | forged"
    f"\x85{FORGED} nel\u2028{FORGED} ls\r{FORGED} cr"
)


# --------------------------------------------------------------------------------------------
# Fake servers that fail the jobs (and echo what they got, to tempt a leak)
# --------------------------------------------------------------------------------------------


class FakeSmtp:
    """An SMTP server that offers AUTH without STARTTLS and refuses every login (535)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.received: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.5)
        while True:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        state = "command"
        with conn, conn.makefile("rwb") as stream:
            conn.settimeout(30)
            stream.write(b"220 fake.test ESMTP\r\n")
            stream.flush()
            for raw in stream:
                line = raw.decode("latin-1").rstrip("\r\n")
                self.received.append(line)
                words = line.upper().split()
                if state == "login-user":
                    reply, state = b"334 UGFzc3dvcmQ6\r\n", "login-password"
                elif state in ("plain", "login-password"):
                    reply, state = b"535 5.7.8 Authentication credentials invalid\r\n", "command"
                elif words[:1] in (["EHLO"], ["HELO"]):
                    reply = b"250-fake.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"
                elif words[:2] == ["AUTH", "LOGIN"] and len(words) == 2:
                    reply, state = b"334 VXNlcm5hbWU6\r\n", "login-user"
                elif words[:2] == ["AUTH", "LOGIN"]:
                    reply, state = b"334 UGFzc3dvcmQ6\r\n", "login-password"
                elif words[:2] == ["AUTH", "PLAIN"] and len(words) == 2:
                    reply, state = b"334 \r\n", "plain"
                elif words[:1] == ["AUTH"]:
                    reply = b"535 5.7.8 Authentication credentials invalid\r\n"
                elif words[:1] == ["QUIT"]:
                    stream.write(b"221 bye\r\n")
                    stream.flush()
                    return
                else:
                    reply = b"530 5.7.0 authentication required\r\n"
                stream.write(reply)
                stream.flush()

    def close(self) -> None:
        self.sock.close()


class EchoingReceiver(BaseHTTPRequestHandler):
    """Answers every request 400 with all its headers and its body echoed back."""

    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        EchoingReceiver.seen.append(dict(self.headers.items()))
        echo = (str(dict(self.headers.items())) + self.path).encode() + body
        self.send_response(400)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(echo)))
        self.end_headers()
        self.wfile.write(echo)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def smtp() -> Iterator[FakeSmtp]:
    server = FakeSmtp()
    yield server
    server.close()


@pytest.fixture
def receiver() -> Iterator[int]:
    EchoingReceiver.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoingReceiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


# --------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------


def _find(text: str, where: str) -> list[str]:
    return [f"{name} in {where}" for name, value in SECRETS.items() if value in text]


def _redis_dump(client: redis.Redis, prefix: str) -> str:
    """Every value of the installation's keys, except job payloads (which hold the user's own
    data by design)."""
    out = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        kind = client.type(key)
        if kind == b"hash":
            record: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
            for field, value in record.items():
                if field != b"payload":
                    out.append(f"{key!r} {field!r} {value.decode(errors='replace')}")
        elif kind == b"string":
            out.append(f"{key!r} {client.get(key)!r}")
        elif kind == b"list":
            out.append(f"{key!r} {client.lrange(key, 0, -1)!r}")
        elif kind == b"zset":
            out.append(f"{key!r} {client.zrange(key, 0, -1)!r}")
        elif kind == b"set":
            out.append(f"{key!r} {client.smembers(key)!r}")
    return "\n".join(out)


def _payloads(client: redis.Redis, prefix: str) -> dict[str, str]:
    found = {}
    for key in client.scan_iter(match=f"{prefix}:*:job:*", count=1000):
        payload = client.hget(key, "payload")
        if payload is not None:
            found[key.decode()] = payload.decode(errors="replace")  # type: ignore[union-attr]
    return found


def _stop(proc: Proc) -> None:
    """SIGTERM and wait, so the log queue is flushed."""
    proc.signal(signal.SIGTERM)
    try:
        proc.popen.wait(timeout=40)
    except Exception:
        proc.kill()


def test_no_secret_leaks_and_no_forged_log_lines(
    services: Services,
    redis_factory: RedisFactory,
    smtp: FakeSmtp,
    receiver: int,
    tmp_path: Path,
) -> None:
    server = redis_factory(password=REDIS_PASSWORD)
    plugins = "wq_testplugin_good,send_email,http_webhook,wq_forge_plugin"
    env = {
        "WORKQUEUE_PLUGINS": plugins,
        "PYTHONPATH": str(write_forge_plugin(tmp_path / "forge")),
        "WORKQUEUE_API_KEY": API_KEY,
        "WORKQUEUE_SMTP_URL": (
            f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{smtp.port}?starttls=false&timeout=5"
        ),
        "WORKQUEUE_SMTP_FROM": "noreply@example.org",
        "WORKQUEUE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "WORKQUEUE_WEBHOOK_ALLOW": "127.0.0.1",
    }
    metrics_port = free_port()
    worker = services.worker(server.url, metrics_port=metrics_port, env=env)
    producer = services.producer(server.url, env=env, timeout=60)
    assert producer.url is not None and worker.url is not None
    answers: list[str] = []
    auth = {"Authorization": f"Bearer {API_KEY}"}
    tasks = [
        {
            "type": "send_email",
            "retries": 0,
            "payload": {
                "to": "alice@example.org",
                "subject": f"your password is {PAYLOAD_PASSWORD}",
                "text": f"api_key={PAYLOAD_API_KEY} {EMAIL_SECRET}",
            },
        },
        {
            "type": "http_webhook",
            "retries": 0,
            "payload": {
                "url": f"http://127.0.0.1:{receiver}/hook?token={URL_TOKEN}",
                "headers": {"Authorization": f"Bearer {HEADER_TOKEN}", "X-Api-Key": API_KEY},
                "json": {"password": PAYLOAD_PASSWORD, "api_key": PAYLOAD_API_KEY},
            },
        },
        {
            "type": "http_webhook",
            "retries": 0,  # a retry would wait 5 s (the type's backoff); test_fail retries
            "payload": {
                "url": f"http://127.0.0.1:{_closed_port()}/hook?api_key={URL_TOKEN}",
                "headers": {"Authorization": f"Basic {HEADER_TOKEN}"},
                "body": f"password={PAYLOAD_PASSWORD}",
                "timeout": 5,
            },
        },
        {
            "type": "test_fail",
            "retries": 1,
            "payload": {"password": PAYLOAD_PASSWORD, "api_key": PAYLOAD_API_KEY},
        },
        {"type": "forge_error", "retries": 0, "payload": {"message": FORGE_MESSAGE}},
    ]
    ids = []
    with httpx.Client(base_url=producer.url, timeout=20) as http:
        wait_http(worker, "/metrics")
        for headers in ({}, {"Authorization": f"Bearer {WRONG_KEY}"}, {"Authorization": WRONG_KEY}):
            answer = http.post("/enqueue", json=tasks[0], headers=headers)
            assert answer.status_code == 401, answer.text
            answers.append(answer.text + str(answer.headers))
        bad = http.post(
            "/enqueue",
            json={"type": "test_sync_add", "payload": {"a": PAYLOAD_PASSWORD, "b": 1}},
            headers=auth,
        )
        assert bad.status_code == 422, bad.text
        answers.append(bad.text)
        for task in tasks:
            answer = http.post("/enqueue", json=task, headers=auth)
            assert answer.status_code == 202, answer.text
            answers.append(answer.text + str(answer.headers))
            ids.append(answer.json()["id"])

        def settled() -> bool:
            for job_id in ids:
                shown = http.get(f"/jobs/{job_id}", headers=auth).json()
                if shown["status"] != "failed":
                    return False
            return True

        wait_for(settled, 90, "every job to fail for good", interval=0.5)
        jobs = [http.get(f"/jobs/{job_id}", headers=auth).json() for job_id in ids]
        answers += [json.dumps(job) for job in jobs]
        answers.append(http.get("/schema/openapi.json", headers=auth).text)

    # The secrets really went where they belong (else this test could not fail).
    assert any("AUTH" in line.upper() for line in smtp.received), smtp.received
    hook = EchoingReceiver.seen[0]
    assert hook["Authorization"] == f"Bearer {HEADER_TOKEN}" and "webhook-signature" in hook
    errors = {job["type"] + str(n): job["error"] for n, job in enumerate(jobs)}
    assert all(errors.values()), errors

    metrics_json = httpx.get(f"{worker.url}/metrics", timeout=10).text
    metrics_prom = httpx.get(
        f"{worker.url}/metrics", headers={"Accept": "text/plain"}, timeout=10
    ).text
    assert "jobs_failed" in metrics_json and "# TYPE" in metrics_prom

    cli_env = {"WORKQUEUE_REDIS_URL": server.url, "WORKQUEUE_KEY_PREFIX": services.prefix}
    wrong = {
        **cli_env,
        "WORKQUEUE_REDIS_URL": server.url.replace(REDIS_PASSWORD, WRONG_REDIS_PASSWORD),
    }
    commands = [
        *[(("jobs", "show", job_id, "--json"), cli_env, 0) for job_id in ids[:2]],
        (("jobs", "show", ids[0]), cli_env, 0),
        (("jobs", "list", "--status", "failed", "--json"), cli_env, 0),
        (("jobs", "list", "--status", "failed"), cli_env, 0),
        (("stats",), cli_env, 0),
        (("stats", "--json"), cli_env, 0),
        (("stats",), wrong, 1),
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(pool.map(lambda c: run_cli(*c[0], env=c[1]), commands))
    cli_out = []
    for (args, _env, code), done in zip(commands, runs, strict=True):
        assert done.returncode == code, (args, done.stderr)
        cli_out.append(done.stdout + done.stderr)

    _stop(producer)
    _stop(worker)
    logs = {"producer": producer.log(), "worker": worker.log()}
    assert "producer on http" in logs["producer"] and "worker started" in logs["worker"]
    assert "failed for good" in logs["worker"]

    # The search finds what is there: the payloads do hold the secrets (by design).
    payloads = [v for k, v in _payloads(server.client(), services.prefix).items()]
    assert _find("\n".join(payloads), "payloads")

    leaks = []
    for role, text in logs.items():
        leaks += _find(text, f"{role} log")
    leaks += _find(_redis_dump(server.client(), services.prefix), "Redis (all but payloads)")
    leaks += _find(metrics_json, "/metrics JSON") + _find(metrics_prom, "/metrics Prometheus")
    leaks += _find("\n".join(answers), "HTTP answers")
    leaks += _find("\n".join(cli_out), "CLI output")
    assert not leaks, leaks

    # CWE-117: the handler's error is one line in the log; no line starts a forged event.
    for role, text in logs.items():
        for line in text.splitlines():
            if line.startswith(("INFO:", "WARNING:", "ERROR:")):  # uvicorn's own stderr lines
                continue
            assert EVENT_LINE.match(line), f"{role}: forged or broken line {line!r}"
            assert not line.startswith(FORGED)
    forge_lines = [line for line in logs["worker"].splitlines() if "boom" in line]
    assert forge_lines and all(FORGED in line for line in forge_lines)
    forge_error = next(job["error"] for job in jobs if job["type"] == "forge_error")
    assert "\n" not in forge_error and "\r" not in forge_error and "\u2028" not in forge_error
    print(
        f"\nFIGURES secrets: {len(SECRETS)} secret values x 6 places searched, 0 found; "
        f"{len(ids)} failing jobs, 3 x 401, 1 x 422; errors: {errors}"
    )


def test_redis_password_is_redacted_when_redis_refuses(
    services: Services, redis_factory: RedisFactory
) -> None:
    """A wrong Redis password: the worker and producer say so without the password."""
    server = redis_factory(password=REDIS_PASSWORD)
    wrong = server.url.replace(REDIS_PASSWORD, WRONG_REDIS_PASSWORD)
    worker = services.worker(wrong)
    producer = services.producer(wrong, env={"WORKQUEUE_API_KEY": API_KEY})
    assert producer.url is not None
    answer = httpx.get(
        f"{producer.url}/ready", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
    )
    assert answer.status_code == 503, answer.text
    time.sleep(2)
    for proc in (worker, producer):
        _stop(proc)
        text = proc.log()
        assert text, proc.role
        leaks = _find(text, proc.role)
        assert not leaks, (leaks, text[-2000:])


MALFORMED_URLS = [
    f"redis://:{REDIS_PASSWORD}@127.0.0.1:port/0",
    f"redis://:{REDIS_PASSWORD}@127.0.0.1:99999/0",
    f"redis://:{REDIS_PASSWORD}@[::1:6379/0",
    f"http://user:{REDIS_PASSWORD}@127.0.0.1:6379/0",
    f"redis://127.0.0.1:6379/0?password={REDIS_PASSWORD}&socket_timeout=soon",
]


def test_malformed_redis_url_is_a_usage_error_without_the_password() -> None:
    """Every command, and every way a URL can be malformed (tried with ``stats``)."""
    commands = [
        *[(("stats",), url) for url in MALFORMED_URLS],
        (("worker", "--metrics-port", "0"), MALFORMED_URLS[0]),
        (("producer", "--port", "0"), MALFORMED_URLS[0]),
    ]

    def run(command: tuple[tuple[str, ...], str]) -> subprocess.CompletedProcess[str]:
        return run_cli(*command[0], env={"WORKQUEUE_REDIS_URL": command[1]}, timeout=60)

    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(pool.map(run, commands))
    for command, done in zip(commands, runs, strict=True):
        out = done.stdout + done.stderr
        assert done.returncode == 2, (command, out)
        assert "is not a Redis URL" in out and "***" in out, (command, out)
        assert REDIS_PASSWORD not in out and "Traceback" not in out, (command, out)
