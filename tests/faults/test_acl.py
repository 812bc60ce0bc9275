"""T30 (ACL): WorkQueue as a restricted Redis user.

A private redis-server whose ACL file disables the default user and gives the application user
only ``~<prefix>:* &* +@all -@dangerous -@admin``: KEYS, FLUSHALL, FLUSHDB, CONFIG, DEBUG,
INFO, SHUTDOWN and the like are refused to it. Proves that:
- the worker, the producer and every admin CLI command (enqueue, stats, jobs list / show /
  retry / purge) work as that user, and the server's ACL LOG records no refused command or key
  (so no code path even tries a forbidden command);
- with a wrong password the worker says so clearly at startup, stays up and retries with a
  bounded backoff (no tight loop, no crash loop); the producer answers /ready 503 and the admin
  CLI exits 1 with one line.

``nox -s acl`` runs the whole integration and fault suite as such a user (tests/acl_run.py).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from infra_support import (
    AclRedisServer,
    acl_lines,
    count_lines,
    enqueue_http,
    run_cli,
    wait_for,
)
from services import Services

pytestmark = pytest.mark.slow

USER = "wq"
PASSWORD = "s3cret-pw"


@pytest.fixture
def acl_server(tmp_path: Path, key_prefix: str) -> Iterator[AclRedisServer]:
    directory = tmp_path / "redis-acl"
    directory.mkdir()
    server = AclRedisServer(directory, acl_lines(USER, PASSWORD, f"{key_prefix}:*"))
    server.start()
    yield server
    server.close()


def _cli(url: str, prefix: str, *args: str) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "WORKQUEUE_REDIS_URL": url,
        "WORKQUEUE_KEY_PREFIX": prefix,
        "WORKQUEUE_PLUGINS": "wq_testplugin_good",
        "NO_COLOR": "1",
    }
    done = run_cli(list(args), env)
    return done.returncode, done.stdout, done.stderr


def test_the_restricted_user_really_is_restricted(
    acl_server: AclRedisServer, key_prefix: str
) -> None:
    """The premise of the other tests: what the product must never need is refused."""
    user = redis.Redis.from_url(acl_server.user_url(USER, PASSWORD))
    try:
        assert user.ping()
        for command in (("KEYS", "*"), ("FLUSHDB",), ("FLUSHALL",), ("CONFIG", "GET", "port")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                user.execute_command(*command)
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.set("elsewhere:key", "1")
        user.set(f"{key_prefix}:probe", "1")
    finally:
        user.close()
    with acl_server.client() as admin:
        admin.acl_log_reset()


def test_worker_producer_and_admin_cli_as_a_restricted_user(
    acl_server: AclRedisServer, services: Services, key_prefix: str
) -> None:
    url = acl_server.user_url(USER, PASSWORD)
    with acl_server.client() as admin:
        admin.acl_log_reset()
    producer = services.producer(url)
    worker = services.worker(url)
    assert httpx.get(f"{producer.url}/ready", timeout=5).status_code == 200

    ok = [enqueue_http(producer.url, {"type": "test_echo", "payload": {"n": n}}) for n in range(3)]
    bad = enqueue_http(producer.url, {"type": "test_permanent", "payload": {}})
    assert all(a.status_code == 202 for a in [*ok, bad]), [a.text for a in [*ok, bad]]
    code, out, err = _cli(url, key_prefix, "enqueue", "test_echo", "-d", '{"n": 9}', "--json")
    assert code == 0, err
    cli_job = json.loads(out)["id"]
    ids = [a.json()["id"] for a in ok] + [cli_job]
    bad_id = bad.json()["id"]

    def status(job_id: str) -> str:
        return str(httpx.get(f"{producer.url}/jobs/{job_id}", timeout=5).json()["status"])

    wait_for(lambda: all(status(i) == "completed" for i in ids), timeout=30, what="completed")
    wait_for(lambda: status(bad_id) == "failed", timeout=30, what="the permanent job failed")

    code, out, err = _cli(url, key_prefix, "stats", "--json")
    assert code == 0, err
    assert "completed" in out or "done" in out
    code, out, err = _cli(url, key_prefix, "jobs", "list", "--status", "failed", "--json")
    assert code == 0, err
    assert bad_id in out
    code, out, err = _cli(url, key_prefix, "jobs", "show", cli_job, "--json")
    assert code == 0, err
    assert json.loads(out)["status"] == "completed"
    code, out, err = _cli(url, key_prefix, "jobs", "retry", bad_id)
    assert code == 0, err
    wait_for(lambda: status(bad_id) == "failed", timeout=30, what="the retried job failed again")
    code, out, err = _cli(url, key_prefix, "jobs", "purge", "--status", "completed", "--yes")
    assert code == 0, err
    assert httpx.get(f"{producer.url}/jobs/{cli_job}", timeout=5).status_code == 404

    assert worker.alive() and producer.alive()
    with acl_server.client() as admin:
        refused = admin.acl_log()
    assert refused == [], refused  # no command or key was ever refused to the product


def test_wrong_password_is_a_clear_error_with_bounded_retries(
    acl_server: AclRedisServer, services: Services, key_prefix: str
) -> None:
    url = acl_server.user_url(USER, "not-the-password")
    worker = services.worker(url)
    wait_for(lambda: "worker started" in worker.log(), timeout=20, what="worker start")
    time.sleep(5.0)  # watch it retry for a while
    log = worker.log_file.read_text()  # the log file alone (stderr has a copy)
    assert worker.alive(), log[-3000:]
    refusals = [line for line in log.splitlines() if "Redis refused the login" in line]
    assert refusals, log[-3000:]
    assert all("| ERROR |" in line and "check the user and password" in line for line in refusals)
    assert "not-the-password" not in log  # the secret is never logged
    # Exponential backoff (0.1 s doubling to 5 s): a handful of lines in 5 s, not a flood.
    assert len(refusals) <= 12, log[-3000:]
    assert count_lines(worker.log(), "Traceback") == 0

    producer = services.producer(url)
    assert httpx.get(f"{producer.url}/ready", timeout=10).status_code == 503
    code, _out, err = _cli(url, key_prefix, "stats")
    assert code == 1
    assert err.startswith("error: ") and "check the user and password" in err, err
    assert "not-the-password" not in err
