"""``workqueue schedules add|list|show|pause|resume|remove`` as real subprocesses."""

from __future__ import annotations

import json

import pytest
from test_cli_admin import ok, wq

pytestmark = pytest.mark.usefixtures("installed_test_plugin")


def test_add_list_pause_resume_remove(key_prefix: str) -> None:
    assert json.loads(ok(key_prefix, "schedules", "list", "--json")) == []
    added = json.loads(
        ok(
            key_prefix, "schedules", "add", "nightly", "--cron", "30 2 * * *",
            "--type", "test_sync_add", "--payload", '{"a": 1, "b": 2}',
            "--timezone", "Europe/Berlin", "--queue", "reports", "--json",
        )
    )  # fmt: skip
    assert added["result"] == "created"
    assert added["timezone"] == "Europe/Berlin" and added["queue"] == "reports"
    assert added["payload"] == {"a": 1, "b": 2} and added["source"] == "operator"
    assert added["next_tick"].endswith((":30:00.000Z", ":00:00.000Z"))  # 02:30 Berlin in UTC
    again = ok(key_prefix, "schedules", "add", "nightly", "--cron", "0 3 * * *", "--type",
               "test_echo")  # fmt: skip
    assert "schedule nightly updated" in again
    ok(key_prefix, "schedules", "pause", "nightly")
    (view,) = json.loads(ok(key_prefix, "schedules", "list", "--json"))
    assert view["paused"] is True and view["cron"] == "0 3 * * *" and view["next_tick"] is None
    assert "paused" in ok(key_prefix, "schedules", "list")
    resumed = json.loads(ok(key_prefix, "schedules", "resume", "nightly", "--json"))
    assert resumed == {"name": "nightly", "result": "resumed"}
    shown = json.loads(ok(key_prefix, "schedules", "show", "nightly", "--json"))
    assert shown["paused"] is False and shown["next_tick"] is not None
    assert "removed" in ok(key_prefix, "schedules", "remove", "nightly")
    gone = wq(key_prefix, "schedules", "remove", "nightly")
    assert gone.returncode == 1 and "no schedule named 'nightly'" in gone.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cron", "61 * * * *", "--type", "test_echo"], "cron: invalid cron expression"),
        (["--cron", "* * * * *", "--type", "nope"], "unknown job type 'nope'"),
        (["--cron", "* * * * *", "--type", "test_echo", "--timezone", "X/Y"], "time zone"),
        (["--cron", "* * * * *", "--type", "test_sync_add", "--payload", '{"a": "x"}'], "payload"),
        (["--cron", "* * * * *", "--type", "test_echo", "--payload", "{"], "not valid JSON"),
        (["--cron", "* * * * *", "--type", "test_echo", "--queue", "a#b"], "queue"),
    ],
)
def test_add_refuses_what_an_enqueue_would(key_prefix: str, args: list[str], message: str) -> None:
    done = wq(key_prefix, "schedules", "add", "bad", *args)
    assert done.returncode == 1
    assert message in done.stderr
    assert json.loads(ok(key_prefix, "schedules", "list", "--json")) == []
