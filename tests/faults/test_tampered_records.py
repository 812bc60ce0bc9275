"""T24: job records written straight into Redis, as an attacker with Redis access (or a bug)
would: pickle and marshal bytes as payload, a type naming ``builtins.eval`` / ``os.system`` /
a module nobody has, an oversize payload, a payload failing its schema, fields missing,
counters that are not integers, bytes that are not UTF-8, a type name holding a newline, and
queued ids whose key is a string, a list or missing.

A real worker subprocess fails each one as an invalid job (or, for a well-formed type nobody
installed, "not installed", within the record's own retry budget), never runs it twice, keeps
running, and runs the good jobs queued around them. A ``sitecustomize`` inside the worker
records every import attempt and every unpickling lookup: nothing named by job data is ever
imported and nothing is unpickled, so JSON is the only decoder job data meets.
"""

from __future__ import annotations

import json
import marshal
import pickle
import time
from pathlib import Path

import redis
from inputkit import (
    Audit,
    job_key,
    record_of,
    run_cli,
    wait_for,
    wake,
    write_audit_sitecustomize,
    write_record,
)
from redis_server import RedisServer
from services import Services

#: a pickle that, if ever loaded, would look up (and so import) module wq_canary_pickle
PICKLE_CANARY = b"cwq_canary_pickle\nboom\n(S'id'\ntR."


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("echo tampered",))


def _pickle_of_os_system() -> bytes:
    return pickle.dumps(_Evil(), protocol=4)


def _marshal_code() -> bytes:
    code = compile("import wq_canary_marshal\n" + "#" * 4321, "<tampered>", "exec")
    return marshal.dumps(code)


TAMPERED: dict[str, tuple[dict[str, bytes | str | None], str]] = {
    # id: (fields written, what the stored error must start with)
    "pickle-canary": ({"payload": PICKLE_CANARY}, "invalid job: payload is not valid JSON"),
    "pickle-os-system": (
        {"payload": _pickle_of_os_system()},
        "invalid job: payload is not valid JSON",
    ),
    "marshal-code": ({"payload": _marshal_code()}, "invalid job: payload is not valid JSON"),
    "type-builtins-eval": (
        {"type": "builtins.eval", "payload": b'{"source": "1+1"}', "retries": "0"},
        "LookupError: job type 'builtins.eval' is not installed",
    ),
    "type-os-system": (
        {"type": "os.system", "payload": b'{"command": "id"}', "retries": "0"},
        "LookupError: job type 'os.system' is not installed",
    ),
    "type-unknown": (
        {"type": "wq_canary_unknown.module", "retries": "0"},
        "LookupError: job type 'wq_canary_unknown.module' is not installed",
    ),
    "type-not-a-name": (
        {"type": "os.system('id')", "retries": "5"},
        "invalid job: job type \"os.system('id')\" is not a valid job type name",
    ),
    "type-newline": (
        {"type": "test_echo\nINFO | fake", "retries": "5"},
        "invalid job: job type 'test_echo\\nINFO | fake' is not a valid job type name",
    ),
    "type-not-utf8": ({"type": b"test_echo\xff", "retries": "5"}, "invalid job: job type"),
    "payload-oversize": (
        {"payload": b'{"x": "' + b"a" * (2 * 1024 * 1024) + b'"}'},
        "invalid job: payload of 2097161 bytes exceeds the 1048576-byte limit",
    ),
    "payload-schema": (
        {"type": "test_sync_add", "payload": b'{"a": "1", "b": 2}'},
        "invalid job: payload does not match the job type's schema: payload.a",
    ),
    "payload-not-object": ({"payload": b"[1, 2]"}, "invalid job: payload is not a JSON object"),
    "payload-nan": ({"payload": b'{"n": NaN}'}, "invalid job: payload is not valid JSON"),
    "payload-missing": ({"payload": None}, "invalid job: payload is not valid JSON"),
    "type-missing": ({"type": None}, "invalid job: malformed record: the record has no type"),
    "attempts-garbage": (
        {"attempts": "many"},
        "invalid job: malformed record: its attempts is not an integer",
    ),
    "attempts-huge": (
        {"attempts": "9" * 40},
        "invalid job: malformed record: its attempts is not an integer",
    ),
    "failures-garbage": (
        {"type": "test_fail", "failures": "x"},
        "invalid job: malformed record: its failures is not an integer",
    ),
    "retries-garbage": (
        {"type": "test_fail", "retries": "lots"},
        "invalid job: malformed record: its retries is not an integer",
    ),
    "lost-garbage": ({"lost": "??"}, "invalid job: malformed record: its lost is not an integer"),
}
#: fields tampered with that still leave a runnable job
HARMLESS: dict[str, dict[str, bytes | str | None]] = {
    "timeout-garbage": {"timeout": "soon"},
    "enqueued-at-garbage": {"enqueued_at": "yesterday"},
    "enqueued-at-huge": {"enqueued_at": "9" * 30},
    "counters-missing": {"attempts": None, "failures": None, "lost": None, "retries": None},
}
NEVER_IMPORTED = (
    "builtins.eval",
    "os.system",
    "wq_canary_unknown",
    "wq_canary_pickle",
    "wq_canary_marshal",
)
FINAL = ("completed", "failed")


def _good(n: int) -> dict[str, bytes | str | None]:
    return {"type": "test_sync_add", "payload": json.dumps({"a": n, "b": 1000}).encode()}


def test_tampered_records_fail_as_invalid_and_nothing_is_imported(
    services: Services, private_redis: RedisServer, tmp_path: Path
) -> None:
    client = private_redis.client()
    prefix = services.prefix
    # A good job after each tampered one: one reserve batch holds them all.
    ids: list[str] = []
    for n, (job_id, (fields, _)) in enumerate(TAMPERED.items()):
        write_record(client, prefix, job_id, fields)
        write_record(client, prefix, f"good-{n}", _good(n))
        ids += [job_id, f"good-{n}"]
    for job_id, fields in HARMLESS.items():
        write_record(client, prefix, job_id, fields)
        ids.append(job_id)
    # Ids whose "record" is no hash at all, or missing: dropped as orphans, not fatal.
    client.set(job_key(prefix, "a-string"), "not a record")
    client.rpush(job_key(prefix, "a-list"), "not", "a", "record")
    client.rpush(f"{prefix}:{{default}}:queued", "a-string", "a-list", "a-ghost")
    write_record(client, prefix, "good-after-orphans", _good(-1000))
    ids.append("good-after-orphans")
    audit_file = tmp_path / "worker-audit.txt"
    env = write_audit_sitecustomize(tmp_path / "site", audit_file)
    worker = services.worker(private_redis.url, "--concurrency", "64", env=env)
    wake(client, prefix)

    def settled() -> bool:
        return all(record_of(client, prefix, i).get("status") in FINAL for i in ids)

    wait_for(settled, 90, "every record to reach completed or failed")
    assert worker.alive(), worker.log()[-3000:]

    for job_id, (_fields, error) in TAMPERED.items():
        record = record_of(client, prefix, job_id)
        assert record["status"] == "failed", (job_id, record)
        assert record["error"].startswith(error), (job_id, record["error"])
        if error.startswith("invalid job: malformed record"):  # failed without running
            assert record.get("attempts") == TAMPERED[job_id][0].get("attempts", "0"), record
        else:  # ran once, never retried
            assert record["attempts"] == "1", (job_id, record)
        assert client.zscore(f"{prefix}:{{default}}:failed", job_id) is not None
    for n in range(len(TAMPERED)):
        record = record_of(client, prefix, f"good-{n}")
        assert record["status"] == "completed", (n, record)
        assert json.loads(record["result"]) == n + 1000
    for job_id in HARMLESS:
        assert record_of(client, prefix, job_id)["status"] == "completed", job_id
    assert record_of(client, prefix, "good-after-orphans")["result"] == "0"
    assert client.hget(f"{prefix}:{{default}}:stats", "orphans") == b"3"
    assert client.zcard(f"{prefix}:{{default}}:retry") == 0
    assert client.llen(f"{prefix}:{{default}}:queued") == 0
    assert client.zcard(f"{prefix}:{{default}}:active") == 0

    # The worker keeps taking work afterwards.
    write_record(client, prefix, "after", _good(7))
    wake(client, prefix)
    wait_for(lambda: record_of(client, prefix, "after").get("status") == "completed", 30, "after")

    # Every tampered record is readable by the operators' tools.
    cli_env = {"WORKQUEUE_REDIS_URL": private_redis.url, "WORKQUEUE_KEY_PREFIX": prefix}
    for job_id in ("enqueued-at-huge", "enqueued-at-garbage", "type-not-utf8", "type-missing"):
        shown = run_cli("jobs", "show", job_id, "--json", env=cli_env)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["id"] == job_id
    listed = run_cli("jobs", "list", "--status", "failed", "--json", "-n", "100", env=cli_env)
    assert listed.returncode == 0, listed.stderr
    assert {j["id"] for j in json.loads(listed.stdout)} >= set(TAMPERED)

    log = worker.log()
    assert "Traceback" not in log
    # A type holding a newline is escaped in the log: no line starts the forged event.
    assert "test_echo\\nINFO | fake" in log
    assert not [line for line in log.splitlines() if line.startswith("INFO | fake")]

    audit = Audit.read(audit_file)
    audit.assert_working()
    audit.assert_never_touched(*NEVER_IMPORTED)
    # Unpickling happens in the worker only inside loguru's log queue (enqueue=True), of its
    # own record classes: never of anything from job data.
    lookups = audit.pickle_lookups()
    assert not {n for n in lookups if not n.startswith(("loguru.", "datetime."))}, lookups
    print(
        f"\nFIGURES tampered records: {len(TAMPERED)} tampered + {len(HARMLESS)} harmless + "
        f"{len(TAMPERED) + 1} good; tampered all failed once, good all completed; "
        f"pickle lookups in the worker: {sorted(lookups) or 'none'}"
    )


def test_unknown_type_is_retried_within_its_budget_then_failed(
    services: Services, private_redis: RedisServer, tmp_path: Path
) -> None:
    """A well-formed type nobody installed may belong to another worker of a mixed fleet
    (docs/operations.md): it is retried within its own retries (5 s apart), then failed with
    the reason, and never imported."""
    client = private_redis.client()
    prefix = services.prefix
    write_record(client, prefix, "eval", {"type": "builtins.eval", "retries": "1"})
    audit_file = tmp_path / "worker-audit.txt"
    env = write_audit_sitecustomize(tmp_path / "site", audit_file)
    worker = services.worker(private_redis.url, env=env)
    wake(client, prefix)
    started = time.monotonic()
    wait_for(lambda: record_of(client, prefix, "eval").get("status") == "failed", 60, "failed")
    record = record_of(client, prefix, "eval")
    assert record["attempts"] == "2" and record["failures"] == "2", record
    assert "is not installed" in record["error"]
    assert worker.alive()
    Audit.read(audit_file).assert_never_touched("builtins.eval")
    took = time.monotonic() - started
    print(f"\nFIGURES unknown type, retries=1: failed after 2 attempts, {took:.1f}s")


def test_records_are_hashes_the_worker_reads(private_redis: RedisServer) -> None:
    """The layout written by these tests is the one enqueue.lua writes (guards the tests
    against a layout change that would make them pass vacuously)."""
    keys = Path(__file__).parents[2] / "core" / "workqueue" / "broker" / "lua" / "enqueue.lua"
    source = keys.read_text()
    for field in ("'type'", "'payload'", "'retries'", "'attempts'", "'failures'", "'lost'"):
        assert field in source
    client: redis.Redis = private_redis.client()
    write_record(client, "layout", "x", {})
    assert client.type(job_key("layout", "x")) == b"hash"
