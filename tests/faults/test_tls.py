"""T30 (TLS): WorkQueue over a TLS-only redis-server with a private CA.

Proves that:
- a worker and a producer given ``rediss://localhost:PORT/0?ssl_ca_certs=CA`` run jobs end to
  end over TLS, and the admin CLI works the same way;
- hostname checking is on: a server whose certificate (signed by the trusted CA) names another
  host is refused; the worker says so in its log, keeps retrying with a bounded backoff (no
  hang, no crash loop) and the job stays queued; the producer answers 503 and ``/ready`` fails;
- a plain ``redis://`` client against the TLS port fails at once with a clear error.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from infra_support import (
    TlsRedisServer,
    count_lines,
    enqueue_http,
    make_tls_files,
    run_cli,
    wait_for,
)
from services import Services

pytestmark = pytest.mark.slow


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TlsRedisServer]:
    files = make_tls_files(tmp_path / "tls", "localhost", "127.0.0.1")
    server = TlsRedisServer(tmp_path / "redis", files)
    server.directory.mkdir()
    server.start()
    yield server
    server.close()


@pytest.fixture
def wrong_host_server(tmp_path: Path) -> Iterator[TlsRedisServer]:
    """The certificate is valid and signed by the trusted CA, but names example.org only."""
    files = make_tls_files(tmp_path / "tls-wrong", "example.org")
    server = TlsRedisServer(tmp_path / "redis-wrong", files)
    server.directory.mkdir()
    server.start()
    yield server
    server.close()


def _cli_env(url: str, prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "WORKQUEUE_REDIS_URL": url,
        "WORKQUEUE_KEY_PREFIX": prefix,
        "WORKQUEUE_PLUGINS": "wq_testplugin_good",
    }


def test_jobs_flow_end_to_end_over_tls(
    tls_server: TlsRedisServer, services: Services, key_prefix: str
) -> None:
    producer = services.producer(tls_server.url)
    worker = services.worker(tls_server.url)
    assert httpx.get(f"{producer.url}/ready", timeout=5).status_code == 200
    ids = []
    for n in range(5):
        answer = enqueue_http(producer.url, {"type": "test_echo", "payload": {"n": n}})
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])

    def all_done() -> bool:
        states = [httpx.get(f"{producer.url}/jobs/{i}", timeout=5).json() for i in ids]
        return all(s["status"] == "completed" for s in states)

    wait_for(all_done, timeout=30, what="5 jobs completed over TLS")
    result = httpx.get(f"{producer.url}/jobs/{ids[0]}", timeout=5).json()["result"]
    assert result == {"n": 0}
    # The job records really are on the TLS server (nothing went elsewhere).
    with tls_server.client() as admin:
        assert admin.hget(f"{key_prefix}:{{default}}:job:{ids[0]}", "status") == b"completed"
    # The admin CLI connects the same way.
    done = run_cli(["stats", "--json"], _cli_env(tls_server.url, key_prefix))
    assert done.returncode == 0, done.stderr
    assert worker.alive()


def test_certificate_for_another_host_is_refused(
    wrong_host_server: TlsRedisServer, services: Services, key_prefix: str
) -> None:
    # The test's own client (no hostname check) puts a job in the queue.
    env = _cli_env(wrong_host_server.url + "&ssl_check_hostname=false", key_prefix)
    done = run_cli(["enqueue", "test_echo", "--payload", '{"n": 1}'], env)
    assert done.returncode == 0, done.stderr
    with wrong_host_server.client() as admin:
        queued = f"{key_prefix}:{{default}}:queued"
        assert admin.llen(queued) == 1

        worker = services.worker(wrong_host_server.url)
        wait_for(
            lambda: "Hostname mismatch" in worker.log(), timeout=20, what="hostname error logged"
        )
        time.sleep(5)  # watch the retries for a while
        log = worker.log_file.read_text()  # the log file alone (stderr has a copy)
        assert worker.alive(), log[-3000:]
        # bounded retry: the backoff doubles up to 5 s, so a handful of lines, not hundreds
        assert 1 <= count_lines(log, "Hostname mismatch") <= 15, log[-3000:]
        assert count_lines(log, "the TLS handshake with Redis failed") >= 1, log[-3000:]
        assert admin.llen(queued) == 1  # never reserved
        assert not [line for line in log.splitlines() if line.endswith("| started")]

    # The producer refuses too: /ready and /enqueue answer 503, nothing is written.
    producer = services.producer(wrong_host_server.url)
    assert httpx.get(f"{producer.url}/ready", timeout=10).status_code == 503
    answer = enqueue_http(producer.url, {"type": "test_echo", "payload": {}})
    assert answer.status_code == 503, answer.text
    # The admin CLI: one clear line, exit 1.
    done = run_cli(["stats"], _cli_env(wrong_host_server.url, key_prefix))
    assert done.returncode == 1
    assert "Hostname mismatch" in done.stderr, done.stderr
    assert "check the server certificate" in done.stderr, done.stderr


def test_plain_client_against_the_tls_port_fails_clearly(
    tls_server: TlsRedisServer, key_prefix: str
) -> None:
    plain = f"redis://127.0.0.1:{tls_server.port}/0"
    started = time.monotonic()
    done = run_cli(["stats"], _cli_env(plain, key_prefix), timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stdout
    assert done.stderr.startswith("error: cannot reach Redis"), done.stderr
    assert elapsed < 30  # fails, does not hang
