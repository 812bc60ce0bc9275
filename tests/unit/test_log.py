"""Tests of workqueue.log: line format, JSON lines, log-forging defence, rotation, flushing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from loguru import logger

from workqueue.log import EventBatch, configure_logging, redact_url, sanitize, shutdown_logging

TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
LINE_START = re.compile(rf"^{TIME} \| ")
JSON_KEYS = ["time", "level", "role", "worker", "job_id", "type", "attempt", "event"]
# Everything str.splitlines() breaks on, plus a terminal escape and a NUL.
LINE_BREAKERS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85"]
LINE_BREAKERS += ["\u2028", "\u2029", "\x1b[2K\r", "\x00"]


@pytest.fixture(autouse=True)
def _restore_loguru() -> Iterator[None]:
    """loguru is process-global: leave it without our sinks, extras or patcher after each test."""
    yield
    shutdown_logging()


def read_lines(path: Path) -> list[str]:
    """Flush the queued sinks, then return the file's lines as any reader would split them."""
    shutdown_logging()
    return path.read_text(encoding="utf-8").splitlines()


def text_config(tmp_path: Path, **kwargs: object) -> Path:
    log_file = tmp_path / "logs.txt"
    options: dict[str, object] = {"role": "worker", "log_file": log_file, "stderr": False}
    options.update(kwargs)
    configure_logging(**options)  # type: ignore[arg-type]
    return log_file


# --- text format ----------------------------------------------------------------------------


def test_unbound_fields_render_as_dashes(tmp_path: Path) -> None:
    # Given a worker log with no worker id
    log_file = text_config(tmp_path)
    # When an event is logged without bound fields
    logger.info("worker started")
    # Then every column is there, missing ones as "-"
    [line] = read_lines(log_file)
    assert re.fullmatch(
        rf"{TIME} \| INFO \| worker \| - \| job=- \| type=- \| attempt=- \| worker started", line
    )


def test_time_is_utc_with_milliseconds(tmp_path: Path) -> None:
    log_file = text_config(tmp_path)
    before = datetime.now(UTC)
    logger.info("tick")
    [line] = read_lines(log_file)
    stamp = datetime.strptime(line.split(" | ")[0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert before - timedelta(seconds=1) <= stamp <= datetime.now(UTC)


def test_bound_fields_appear_in_their_columns(tmp_path: Path) -> None:
    log_file = text_config(tmp_path, worker_id="w-host-1234")
    job_log = logger.bind(job_id="0f3a", type="send_email", attempt=1)
    job_log.info("succeeded in 12.3 ms")
    [line] = read_lines(log_file)
    assert line.endswith(
        " | INFO | worker | w-host-1234 | job=0f3a | type=send_email | attempt=1"
        " | succeeded in 12.3 ms"
    )


def test_bound_worker_wins_over_the_configured_default(tmp_path: Path) -> None:
    log_file = text_config(tmp_path, worker_id="w-default")
    logger.bind(worker="w-bound").warning("lease lost")
    [line] = read_lines(log_file)
    assert " | WARNING | worker | w-bound | " in line


def test_other_bound_extras_follow_the_message_as_logfmt(tmp_path: Path) -> None:
    log_file = text_config(tmp_path)
    logger.bind(job_id="j1", duration_ms=12.3, error="ValueError: boom", queue="").info("done")
    [line] = read_lines(log_file)
    assert line.endswith(' | done | duration_ms=12.3 error="ValueError: boom" queue=""')


def test_braces_in_user_text_are_not_format_fields(tmp_path: Path) -> None:
    log_file = text_config(tmp_path)
    logger.bind(type="{extra}").info("payload key {!r}", "{0}{message}")
    [line] = read_lines(log_file)
    assert "type={extra} | " in line
    assert line.endswith("payload key '{0}{message}'")


def test_level_filters_events(tmp_path: Path) -> None:
    log_file = text_config(tmp_path, level="warning")
    logger.info("quiet")
    logger.error("loud")
    [line] = read_lines(log_file)
    assert " | ERROR | " in line


def test_unknown_level_is_refused_and_keeps_the_old_sinks(tmp_path: Path) -> None:
    log_file = text_config(tmp_path)
    with pytest.raises(ValueError, match="LOUDEST"):
        configure_logging(role="worker", log_file=tmp_path / "other.txt", level="loudest")
    logger.info("still here")
    assert read_lines(log_file)[0].endswith("still here")
    assert not (tmp_path / "other.txt").exists()


# --- log forging ----------------------------------------------------------------------------


@pytest.mark.parametrize("breaker", LINE_BREAKERS)
def test_line_breaks_in_the_message_cannot_forge_a_line(tmp_path: Path, breaker: str) -> None:
    log_file = text_config(tmp_path)
    forged = f"ok{breaker}2026-01-01T00:00:00.000Z | INFO | worker | - | job=x | forged"
    logger.info("job type {}", forged)
    lines = read_lines(log_file)
    assert len(lines) == 1
    assert log_file.read_bytes().count(b"\n") == 1
    assert b"\r" not in log_file.read_bytes()


@pytest.mark.parametrize("breaker", LINE_BREAKERS)
def test_line_breaks_in_bound_values_cannot_forge_a_line(tmp_path: Path, breaker: str) -> None:
    log_file = text_config(tmp_path)
    evil = f"x{breaker}2026-01-01T00:00:00.000Z | INFO | forged"
    logger.bind(job_id=evil, type=evil, worker=evil, error=evil, **{f"k{breaker}": evil}).info("m")
    lines = read_lines(log_file)
    assert len(lines) == 1
    assert log_file.read_bytes().count(b"\n") == 1


def test_escapes_are_readable(tmp_path: Path) -> None:
    log_file = text_config(tmp_path)
    logger.bind(error="a\r\nb\tc\x1b[0m").info("one\ntwo\u2028three")
    [line] = read_lines(log_file)
    assert line.endswith(" | one\\ntwo\\u2028three | error=a\\r\\nb\\tc\\x1b[0m")


def test_traceback_lines_are_prefixed_and_cannot_forge_events(tmp_path: Path) -> None:
    # Given an exception whose message carries a fake event line
    log_file = text_config(tmp_path)
    forged = "2026-01-01T00:00:00.000Z | INFO | worker | - | job=x | forged"
    # When it is logged with logger.exception
    try:
        raise ValueError(f"boom\n{forged}\r{forged}\u2028{forged}")
    except ValueError:
        logger.bind(job_id="j1").exception("attempt failed")
    # Then only the first line is an event; the traceback follows under the "  | " prefix
    first, *rest = read_lines(log_file)
    assert first.endswith(" | job=j1 | type=- | attempt=- | attempt failed")
    assert rest[0] == "  | Traceback (most recent call last):"
    assert all(line.startswith("  | ") for line in rest)
    assert "  | ValueError: boom" in rest
    assert rest.count(f"  | {forged}") == 3


# --- JSON lines -----------------------------------------------------------------------------


def test_json_lines_are_one_parseable_object_each(tmp_path: Path) -> None:
    log_file = text_config(tmp_path, json_lines=True, worker_id="w-1")
    logger.bind(job_id="j1", type="send_email", attempt=2, duration_ms=12.5).info("succeeded")
    logger.info("worker stopped")
    first, second = (json.loads(line) for line in read_lines(log_file))
    assert list(first)[:8] == JSON_KEYS
    assert first["role"] == "worker"
    assert first["worker"] == "w-1"
    assert first["job_id"] == "j1"
    assert first["type"] == "send_email"
    assert first["attempt"] == 2
    assert first["duration_ms"] == 12.5
    assert first["event"] == "succeeded"
    assert first["level"] == "INFO"
    assert re.fullmatch(TIME, first["time"])
    assert second["job_id"] is None
    assert second["type"] is None
    assert second["attempt"] is None
    assert "record" not in first
    assert "elapsed" not in first


@pytest.mark.parametrize("breaker", LINE_BREAKERS)
def test_json_keeps_control_characters_inside_one_line(tmp_path: Path, breaker: str) -> None:
    log_file = text_config(tmp_path, json_lines=True)
    evil = f"a{breaker}b"
    logger.bind(error=evil).info(evil)
    [line] = read_lines(log_file)
    record = json.loads(line)
    assert record["event"] == evil
    assert record["error"] == evil


def test_json_reserved_names_and_odd_values(tmp_path: Path) -> None:
    log_file = text_config(tmp_path, json_lines=True)
    logger.bind(time="mine", event="mine", queue={"name": ("a", 1)}, obj=Path("p")).info("m")
    [line] = read_lines(log_file)
    record = json.loads(line)
    assert record["event"] == "m"
    assert record["extra_time"] == "mine"
    assert record["extra_event"] == "mine"
    assert record["queue"] == {"name": ["a", 1]}
    assert record["obj"] == "p"


def test_json_exception_is_a_string_field(tmp_path: Path) -> None:
    log_file = text_config(tmp_path, json_lines=True)
    try:
        raise RuntimeError("bad\nthing")
    except RuntimeError:
        logger.exception("failed for good")
    [line] = read_lines(log_file)
    record = json.loads(line)
    assert record["event"] == "failed for good"
    assert record["exception"].startswith("Traceback (most recent call last):")
    assert record["exception"].endswith("RuntimeError: bad\nthing")


# --- job events in batches -----------------------------------------------------------------


def _strip_time(line: str) -> str:
    return line.split(" | ", 1)[1]


def test_batched_events_are_the_lines_single_calls_write(tmp_path: Path) -> None:
    # Given the same events written through single loguru calls and through an EventBatch
    log_file = text_config(tmp_path, worker_id="w-1")
    evil = "boom\n2026-01-01T00:00:00.000Z | INFO | forged \u2028 {extra}"
    single = logger.bind(job_id="j1", type="test_echo", attempt=2, queue="default")
    single.info("started")
    single.warning("attempt failed after 1.0 ms: {}", evil)
    logger.bind(job_id="j1", type="test_echo", queue="q x").error("recovered")
    batch = EventBatch()
    batch.add("INFO", "j1", "test_echo", 2, "started", (("queue", "default"),))
    batch.add(
        "WARNING",
        "j1",
        "test_echo",
        2,
        f"attempt failed after 1.0 ms: {evil}",
        (("queue", "default"),),
    )
    batch.add("ERROR", "j1", "test_echo", None, "recovered", (("queue", "q x"),))
    batch.write()
    # Then each event is one line, identical but for the time, user text escaped
    lines = read_lines(log_file)
    assert len(lines) == 6
    assert all(LINE_START.match(line) for line in lines)
    assert [_strip_time(x) for x in lines[:3]] == [_strip_time(x) for x in lines[3:]]
    assert "forged \\u2028 {extra} | queue=default" in lines[4]
    assert lines[5].endswith('attempt=- | recovered | queue="q x"')


def test_batched_events_keep_their_order_among_levels_and_other_lines(tmp_path: Path) -> None:
    log_file = text_config(tmp_path)
    batch = EventBatch()
    logger.info("before")
    for number in range(5):
        level = "WARNING" if number == 2 else "INFO"
        batch.add(level, f"j{number}", "t", 1, f"event {number}")
    batch.write()
    logger.info("after")
    assert len(batch) == 0
    messages = [line.rsplit(" | ", 1)[1] for line in read_lines(log_file)]
    assert messages == ["before", *(f"event {n}" for n in range(5)), "after"]


def test_batched_events_below_the_level_are_not_written(tmp_path: Path) -> None:
    log_file = text_config(tmp_path, level="warning")
    batch = EventBatch()
    assert not batch.enabled("INFO") and batch.enabled("ERROR")
    batch.add("INFO", "j1", "t", 1, "started")
    batch.add("ERROR", "j1", "t", 1, "failed for good")
    batch.write()
    [line] = read_lines(log_file)
    assert line.endswith(" | ERROR | worker | - | job=j1 | type=t | attempt=1 | failed for good")


def test_batched_events_as_json_lines(tmp_path: Path) -> None:
    log_file = text_config(tmp_path, json_lines=True, worker_id="w-1")
    batch = EventBatch()
    batch.add("INFO", "j1", "t", 3, "succeeded in 1.0 ms", (("queue", "default"),))
    batch.add("WARNING", "j2", "t", None, "a\nb", (("event", "mine"),))
    batch.write()
    first, second = (json.loads(line) for line in read_lines(log_file))
    assert list(first)[:8] == JSON_KEYS
    assert first["worker"] == "w-1" and first["role"] == "worker"
    assert (first["job_id"], first["attempt"], first["queue"]) == ("j1", 3, "default")
    assert first["event"] == "succeeded in 1.0 ms"
    assert re.fullmatch(TIME, first["time"])
    assert second["event"] == "a\nb" and second["attempt"] is None
    assert second["extra_event"] == "mine"


def test_batched_events_without_configuration_are_ordinary_log_calls() -> None:
    # Given loguru as a library user set it up (no configure_logging)
    records: list[dict[str, object]] = []
    sink_id = logger.add(lambda message: records.append(message.record), format="{message}")
    try:
        batch = EventBatch()
        batch.add("INFO", "j1", "t", 1, "started", (("queue", "default"),))
        batch.write()
    finally:
        logger.remove(sink_id)
    [record] = records
    assert record["message"] == "started"
    assert record["extra"] == {"job_id": "j1", "type": "t", "attempt": 1, "queue": "default"}


def test_batched_events_are_written_by_a_process_that_exits(tmp_path: Path) -> None:
    log_file = tmp_path / "logs.txt"
    script = textwrap.dedent(
        f"""
        from workqueue.log import EventBatch, configure_logging
        configure_logging(role="worker", log_file={str(log_file)!r}, stderr=False)
        batch = EventBatch()
        for number in range(2000):
            batch.add("INFO", f"j{{number}}", "t", 1, "started")
            if number % 50 == 49:
                batch.write()
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    lines = log_file.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2000
    assert lines[-1].endswith("job=j1999 | type=t | attempt=1 | started")


# --- sinks, rotation, idempotence -----------------------------------------------------------


def test_rotation_keeps_retention_old_files(tmp_path: Path) -> None:
    log_file = text_config(tmp_path, rotation="1 KB", retention=2)
    for number in range(100):
        logger.info("event number {} {}", number, "x" * 40)
    shutdown_logging()
    files = sorted(tmp_path.iterdir())
    rotated = [path for path in files if path != log_file]
    assert log_file in files
    assert len(rotated) == 2
    assert all(path.name.startswith("logs.") and path.suffix == ".txt" for path in rotated)
    assert log_file.stat().st_size <= 1024


def test_configuring_twice_does_not_duplicate_lines(tmp_path: Path) -> None:
    text_config(tmp_path, role="producer")
    log_file = text_config(tmp_path, role="worker")
    logger.info("once")
    [line] = read_lines(log_file)
    assert " | INFO | worker | " in line


def test_reconfiguring_switches_format(tmp_path: Path) -> None:
    text_config(tmp_path)
    logger.info("as text")
    text_config(tmp_path, json_lines=True)
    logger.info("as json")
    text_line, json_line = read_lines(tmp_path / "logs.txt")
    assert text_line.endswith(" | as text")
    assert json.loads(json_line)["event"] == "as json"


def test_default_file_is_logs_txt_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    configure_logging(role="cli", stderr=False)
    logger.info("here")
    assert read_lines(tmp_path / "logs.txt")[0].endswith(
        " | INFO | cli | - | job=- | type=- | attempt=- | here"
    )


@pytest.mark.parametrize("log_file", [None, ""])
def test_no_file_sink_writes_only_stderr(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    log_file: str | None,
) -> None:
    monkeypatch.chdir(tmp_path)
    configure_logging(role="producer", log_file=log_file)
    logger.info("enqueued")
    shutdown_logging()
    assert list(tmp_path.iterdir()) == []
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith(" | INFO | producer | - | job=- | type=- | attempt=- | enqueued")


def test_shutdown_is_idempotent_and_resets_the_patcher(tmp_path: Path) -> None:
    text_config(tmp_path)
    shutdown_logging()
    shutdown_logging()
    seen: list[str] = []
    handler_id = logger.add(
        lambda message: seen.append(message.record["message"]), format="{message}"
    )
    try:
        logger.info("raw\nline")
    finally:
        logger.remove(handler_id)
    assert seen == ["raw\nline"]


# --- process exit flushes the queue ---------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from loguru import logger
    from workqueue.log import configure_logging

    configure_logging(role="worker", log_file=sys.argv[1], stderr=False, worker_id="w-child")

    async def main() -> None:
        for number in range(2000):
            logger.bind(job_id=f"j{number}", attempt=1).info("succeeded")
        if sys.argv[2] == "exit":
            sys.exit(3)
        if sys.argv[2] == "raise":
            raise RuntimeError("crash")

    asyncio.run(main())
    """
)


@pytest.mark.parametrize(("how", "returncode"), [("return", 0), ("exit", 3), ("raise", 1)])
def test_a_process_that_exits_has_written_every_line(
    tmp_path: Path, how: str, returncode: int
) -> None:
    # Given a child process that logs 2000 events through the enqueued sink
    log_file = tmp_path / "child.txt"
    # When it ends without calling shutdown_logging
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(log_file), how],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Then every line reached the file
    assert result.returncode == returncode, result.stderr
    lines = log_file.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2000
    assert lines[-1].endswith(" | worker | w-child | job=j1999 | type=- | attempt=1 | succeeded")


# --- redact_url -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://user:secret@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://:secret@host", "redis://:***@host"),
        (
            "rediss://default:s3cr3t@cache.example.com:6380/1",
            "rediss://default:***@cache.example.com:6380/1",
        ),
        ("redis://:p@ss:w0rd@host:6379", "redis://:***@host:6379"),
        ("unix://:secret@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
        ("smtp://mailer:hunter2@smtp.example.com:587", "smtp://mailer:***@smtp.example.com:587"),
        ("redis://host:6379/0?password=secret&db=1", "redis://host:6379/0?password=***&db=1"),
        ("redis://host/0?db=1&PassWord=secret#frag", "redis://host/0?db=1&PassWord=***#frag"),
        ("user:secret@host:6379", "user:***@host:6379"),
    ],
)
def test_redact_url_hides_passwords(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "redis://user@host:6379",
        "redis://user:@host",
        "rediss://host?db=2&ssl_cert_reqs=none",
        "redis://host/0?",
        "localhost:6379",
        "",
        "redis://[::1]:6379/0",
    ],
)
def test_redact_url_leaves_urls_without_password_unchanged(url: str) -> None:
    assert redact_url(url) == url


# --- sanitize -------------------------------------------------------------------------------


def test_sanitize_makes_one_line() -> None:
    assert sanitize("  line one\r\nline two\n") == "line one\\r\\nline two"


def test_sanitize_escapes_controls_and_unicode_line_separators() -> None:
    assert sanitize("a\tb\x1b[31mc\u2028d\x85e\x00") == "a\\tb\\x1b[31mc\\u2028d\\x85e\\x00"


def test_sanitize_truncates_with_an_ellipsis() -> None:
    result = sanitize("x" * 10_000, limit=20)
    assert result == "x" * 19 + "…"
    assert sanitize("x" * 20, limit=20) == "x" * 20


def test_sanitize_limit_counts_escaped_characters() -> None:
    result = sanitize("\x00" * 100, limit=9)
    assert len(result) == 9
    assert result.endswith("…")


def test_sanitize_renders_exceptions_with_their_type() -> None:
    assert sanitize(ValueError("bad\ninput")) == "ValueError: bad\\ninput"
    assert sanitize(TimeoutError()) == "TimeoutError"


def test_sanitize_survives_a_broken_str() -> None:
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert sanitize(Broken()) == "<unprintable Broken>"
    assert sanitize(None) == "None"
    assert sanitize(12.5) == "12.5"


def test_sanitize_rejects_a_limit_below_one() -> None:
    with pytest.raises(ValueError, match="limit"):
        sanitize("x", limit=0)
