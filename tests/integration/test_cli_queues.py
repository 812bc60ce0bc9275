"""``workqueue queues list|show|set`` as real subprocesses against the real Redis."""

from __future__ import annotations

import json

import pytest
from test_cli_admin import closed_port, enqueue, ok, wq

from workqueue.broker import Broker

pytestmark = pytest.mark.usefixtures("installed_test_plugin")

DEFAULTS = {
    "completed_ttl_s": 86400.0,
    "failed_ttl_s": 604800.0,
    "max_lost_leases": 3,
    "configured": False,
}


def test_list_shows_depths_age_and_settings(key_prefix: str) -> None:
    assert json.loads(ok(key_prefix, "queues", "list", "--json")) == []
    enqueue(key_prefix, "test_echo")
    enqueue(key_prefix, "test_echo")
    enqueue(key_prefix, "test_echo", "{}", "--queue", "later", "--delay", "600")
    views = json.loads(ok(key_prefix, "queues", "list", "--json"))
    assert [v["queue"] for v in views] == ["default", "later"]
    default, later = views
    assert default["queued"] == 2 and default["scheduled"] == 0 and default["running"] == 0
    assert default["oldest_waiting_seconds"] >= 0 and default["settings"] == DEFAULTS
    assert later["queued"] == 0 and later["scheduled"] == 1
    assert set(default) == {
        "queue",
        "queued",
        "running",
        "scheduled",
        "retrying",
        "completed_kept",
        "failed_kept",
        "oldest_waiting_seconds",
        "partitions",
        "draining",
        "settings",
        "paused",  # H4: queue control
        "cancelled",
        "queued_by_priority",
    }
    assert default["partitions"] == 1 and default["draining"] == []
    assert default["paused"] is False
    table = ok(key_prefix, "queues", "list")
    assert "default" in table and "later" in table and "(defaults)" in table


def test_set_then_show(key_prefix: str) -> None:
    enqueue(key_prefix, "test_echo", "{}", "--queue", "mail")
    out = ok(key_prefix, "queues", "set", "mail", "--completed-ttl", "60", "--json")
    assert json.loads(out) == {
        **DEFAULTS,
        "queue": "mail",
        "completed_ttl_s": 60.0,
        "configured": True,
        "partitions": 1,
        "draining": [],
    }
    out = ok(key_prefix, "queues", "set", "mail", "--failed-ttl", "0", "--max-lost-leases", "5")
    assert out.strip() == "queue mail: completed 60s, failed 0s, max lost leases 5"
    shown = json.loads(ok(key_prefix, "queues", "show", "mail", "--json"))
    assert shown["settings"] == {
        "completed_ttl_s": 60.0,
        "failed_ttl_s": 0.0,
        "max_lost_leases": 5,
        "configured": True,
    }
    assert shown["queued"] == 1 and shown["counters"]["enqueued"] == 1
    table = ok(key_prefix, "queues", "show", "mail")
    assert "max lost leases 5" in table and "enqueued" in table


async def test_a_queue_configured_before_its_first_job_is_listed(
    key_prefix: str, broker: Broker
) -> None:
    ok(key_prefix, "queues", "set", "fresh", "--max-lost-leases", "2")
    (view,) = json.loads(ok(key_prefix, "queues", "list", "--json"))
    assert view["queue"] == "fresh" and view["settings"]["max_lost_leases"] == 2
    assert (await broker.queue_settings(["fresh"]))["fresh"].max_lost_leases == 2


def test_errors_and_usage(key_prefix: str) -> None:
    unknown = wq(key_prefix, "queues", "show", "nope")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "error: no queue named 'nope' (see: workqueue queues list)"
    for args in (
        ("queues", "set", "q"),  # nothing to set
        ("queues", "set", "q", "--completed-ttl", "-1"),
        ("queues", "set", "q", "--max-lost-leases", "0"),
        ("queues", "set", "bad{name}", "--failed-ttl", "5"),
        ("queues", "show"),
        ("queues", "list", "--nope"),
    ):
        done = wq(key_prefix, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert json.loads(ok(key_prefix, "queues", "list", "--json")) == []  # nothing was written


@pytest.mark.parametrize(
    "args",
    [("queues", "list"), ("queues", "show", "x"), ("queues", "set", "x", "--failed-ttl", "1")],
)
def test_unreachable_redis_is_one_line(key_prefix: str, args: tuple[str, ...]) -> None:
    url = f"redis://user:s3cret@127.0.0.1:{closed_port()}/0"
    done = wq(key_prefix, *args, "--redis-url", url)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: cannot reach Redis at redis://user:***@127.0.0.1:")
