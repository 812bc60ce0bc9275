"""The event log: loguru set-up for the entry points, and helpers that keep log lines safe.

Modules of the core never configure loguru. They write::

    from loguru import logger

    log = logger.bind(job_id=job.id, type=job.type, attempt=job.attempt, worker=worker_id)
    log.info("succeeded in {:.1f} ms", duration_ms)

and only the entry points (the ``workqueue`` CLI commands) call :func:`configure_logging` once,
and :func:`shutdown_logging` on the way out.

Text format
    One line per event, fields separated by ``" | "``::

        2026-11-27T19:30:01.123Z | INFO | worker | w-1 | job=0f3a | type=email | attempt=1 | ok

    time (UTC, ISO-8601, milliseconds, ``Z``), level, role, worker id, ``job=``, ``type=``,
    ``attempt=``, message. A field that is not bound renders as ``-``. Any *other* bound extra
    (``duration_ms``, ``error``, ``queue``...) is appended after the message as logfmt pairs,
    ``| duration_ms=12.3 error="ValueError: boom"`` (values with spaces, quotes or ``=`` are
    double-quoted, a ``"`` inside them written ``\\"``).

JSON lines (``json_lines=True``)
    One compact JSON object per line with the keys ``time``, ``level``, ``role``, ``worker``,
    ``job_id``, ``type``, ``attempt``, ``event`` (the message), then every other bound extra
    (a bound extra that collides with one of those names is written as ``extra_<name>``), and
    ``exception`` when a traceback was logged. Not loguru's whole record. ``json_lines``
    applies to both sinks, the file and stderr.

Log forging (CWE-117)
    A user-supplied string can never start a new line. In the text format a patcher escapes, in
    the message and in every bound value, the C0 control characters (CR -> ``\\r``, LF ->
    ``\\n``, TAB -> ``\\t``, others ``\\xNN``), DEL and the C1 controls (``\\x85`` NEL among
    them), U+2028/U+2029, the bidi overrides U+202A-U+202E/U+2066-U+2069 and lone surrogates
    (``\\uNNNN``); the formatter escapes again, so the defence holds even if another patcher
    replaced ours. Backslashes are left alone, so the escaping is not reversible: it is meant
    to be read, not parsed back. In JSON mode JSON string escaping does the job, plus
    ``\\uNNNN`` escapes for the same non-ASCII line and bidi characters (``str.splitlines``
    splits on some of them).

Tracebacks
    ``logger.exception(...)`` renders the traceback from ``traceback.format_exception`` (never
    the local variables, which could hold payload values: loguru's ``diagnose`` is off) on the
    lines following the event, each prefixed with ``"  | "``; every piece ``str.splitlines``
    would break on starts a new prefixed line, other control characters are escaped. So in a
    text log every line that does not start with a timestamp is the continuation of the event
    above it, and an exception message cannot forge an event line. In JSON mode the traceback
    is the ``exception`` string.

Payloads
    Payload values are never logged. This module offers nothing that logs a payload, and its
    callers must not bind or format one into a message: log the job id, type and attempt, and
    error messages passed through :func:`sanitize`. URLs that may carry credentials go through
    :func:`redact_url`.

Job events in batches
    The worker writes its per-job events ("started", "succeeded in X ms", ...) through
    :class:`EventBatch`: each line is rendered at once by this module, in the same format and
    with the same escaping as above, and the lines of one reserve reply or one batch of
    outcomes reach the sinks in one loguru call per run of same-level lines (the pre-rendered
    text travels in a private extra key the formatters emit as is). A line per event still,
    in event order; a batch costs about one ordinary log call, where a log call per event cost
    more than the job itself. The worker gathers lines for up to 50 ms before a write (see
    docs/operations.md). Another sink someone adds to loguru sees such a batch as one record
    with the message ``"N job events"``.

Flushing
    The sinks use ``enqueue=True``: a log call formats the line and hands it to a writer
    thread, so writing never blocks the asyncio loop on disk. On a normal interpreter exit
    (return from main, ``sys.exit``, an uncaught exception) loguru's ``atexit`` hook drains the
    queue, so the last lines are written; :func:`shutdown_logging` does it explicitly and
    should be called before ``os._exit``. A process killed by a signal it does not handle
    (SIGKILL, or SIGTERM without a handler) loses what is still queued.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC
from typing import TYPE_CHECKING, Any

from loguru import logger

if TYPE_CHECKING:
    from loguru import Record

__all__ = [
    "DEFAULT_LOG_FILE",
    "EventBatch",
    "configure_logging",
    "redact_url",
    "sanitize",
    "shutdown_logging",
]

DEFAULT_LOG_FILE = "logs.txt"

# Bound extra keys that have a column of their own, in line order.
_CORE_FIELDS = ("role", "worker", "job_id", "type", "attempt")
# Keys of the JSON object that bound extras may not overwrite.
_JSON_RESERVED = frozenset({"time", "level", "event", "exception", *_CORE_FIELDS})
# Private cache keys this module stores in ``record["extra"]``; never rendered.
_PRIVATE_PREFIX = "_wq_"
_TEXT_KEY = "_wq_text"
_JSON_KEY = "_wq_json"
_MISSING = "-"
_TRACEBACK_PREFIX = "  | "

# Characters that could end a line, fool a terminal or reorder what a reader sees.
_UNSAFE_CHARS = "\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE_RE = re.compile(f"[{_UNSAFE_CHARS}]")
# The subset JSON escaping leaves raw (it escapes only U+0000-U+001F, quote and backslash).
_JSON_UNSAFE_RE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Values left as they are; anything else is turned into its str() before it reaches a sink
# (it also keeps records picklable for the enqueue thread).
_SCALARS = (str, int, float, bool, type(None))
_JSON_VALUES = (*_SCALARS, list, tuple, dict)
_LOGFMT_QUOTE_RE = re.compile(r'[\s"=]')

# Query parameters whose value redact_url hides (compared case-insensitively).
_SECRET_PARAMS = frozenset(
    {"password", "passwd", "pass", "pwd", "secret", "token", "api_key", "apikey", "access_token"}
    | {"sentinel_password"}
)
_REDACTED = "***"


@dataclass
class _State:
    """What the current configure_logging call set up."""

    active: bool = False
    json_lines: bool = False
    handler_ids: list[int] = field(default_factory=list)
    #: the severity below which no sink of ours writes (EventBatch skips such events)
    level_no: int = 0
    #: the role and worker columns for EventBatch: as given, and escaped for the text format
    role: str | None = None
    worker: str | None = None
    role_text: str = _MISSING
    worker_text: str = _MISSING


_state = _State()
_lock = threading.Lock()


# --- escaping -------------------------------------------------------------------------------


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _escape(text: str) -> str:
    """Return ``text`` with every line-breaking or control character escaped."""
    return _UNSAFE_RE.sub(_escape_char, text)


def _json_escape_char(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _to_text(value: object) -> str:
    """``str(value)`` that never raises (a broken ``__str__`` must not lose the log line)."""
    try:
        return str(value)
    except Exception:  # a user object's __str__ can raise anything
        return f"<unprintable {type(value).__name__}>"


def sanitize(value: object, limit: int = 500) -> str:
    """Return ``value`` as one safe line of at most ``limit`` characters.

    For error messages that go into logs and job records: surrounding whitespace is stripped,
    control and line-breaking characters are escaped as in the text log (``\\n``, ``\\r``,
    ``\\t``, ``\\xNN``, ``\\uNNNN``), and a longer result is cut to ``limit - 1`` characters
    plus ``"…"``. An exception renders as ``"TypeName: message"`` (just the type name when the
    message is empty). Never raises on odd values.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if isinstance(value, BaseException):
        message = _to_text(value)
        text = f"{type(value).__name__}: {message}" if message else type(value).__name__
    else:
        text = _to_text(value)
    # Escaping only makes a string longer, so cut first: a 10 MB error costs nothing more.
    text = _escape(text.strip()[: limit + 1])
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


# --- URL redaction --------------------------------------------------------------------------


def _redact_userinfo(userinfo: str) -> str:
    user, colon, password = userinfo.partition(":")
    if not colon or not password:
        return userinfo
    return f"{user}:{_REDACTED}"


def _redact_query(query: str) -> str:
    parts = query.split("&")
    for index, part in enumerate(parts):
        name, equals, value = part.partition("=")
        if equals and value and name.strip().lower() in _SECRET_PARAMS:
            parts[index] = f"{name}={_REDACTED}"
    return "&".join(parts)


def redact_url(url: str) -> str:
    """Return ``url`` with its password hidden, for logs and error messages.

    ``redis://user:secret@host:6379/0`` -> ``redis://user:***@host:6379/0``, and likewise
    ``redis://:secret@host``, ``rediss://``, ``unix://``, ``smtp://``, ``smtps://``... The value
    of a query parameter named password (or passwd, pass, pwd, secret, token, api_key, apikey,
    access_token; any case) becomes ``***``. A URL without a password is returned unchanged,
    character for character. The authority is split as ``urllib.parse`` (and so redis-py)
    splits it: it ends at the first ``/``, ``?`` or ``#``, and the password is what lies between
    the first ``:`` and the last ``@`` in it. A string without ``://`` is treated as
    ``user:password@host...``.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    end = len(rest)
    for delimiter in "/?#":
        found = rest.find(delimiter)
        if found != -1:
            end = min(end, found)
    authority, tail = rest[:end], rest[end:]
    userinfo, at, hostport = authority.rpartition("@")
    if at:
        authority = f"{_redact_userinfo(userinfo)}@{hostport}"
    before_fragment, hash_sign, fragment = tail.partition("#")
    path, question, query = before_fragment.partition("?")
    if question:
        query = _redact_query(query)
    redacted = f"{scheme}{sep}{authority}{path}{question}{query}{hash_sign}{fragment}"
    return redacted if redacted != url else url


# --- record rendering -----------------------------------------------------------------------


def _patch(record: Record) -> None:
    """Core patcher: make the bound values safe for every sink, escape in the text format."""
    state = _state
    if not state.active:
        return
    extra = record["extra"]
    allowed = _JSON_VALUES if state.json_lines else _SCALARS
    for key, value in list(extra.items()):
        if isinstance(key, str) and key.startswith(_PRIVATE_PREFIX):
            continue
        if not isinstance(value, allowed):
            value = _to_text(value)
        if not state.json_lines and isinstance(value, str):
            value = _escape(value)
        extra[key] = value
    if not state.json_lines:
        record["message"] = _escape(record["message"])


def _utc_time(record: Record) -> str:
    moment = record["time"].astimezone(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def _traceback_lines(record: Record) -> list[str]:
    """The logged exception's traceback as lines without line breaks; [] when there is none."""
    exception = record["exception"]
    if exception is None or exception.type is None:
        return []
    text = "".join(traceback.format_exception(exception.type, exception.value, exception.traceback))
    return text.splitlines()


def _text_value(value: object) -> str:
    if value is None or (isinstance(value, str) and not value):
        return _MISSING
    return _escape(_to_text(value))


def _logfmt_value(value: object) -> str:
    text = "" if value is None else _escape(_to_text(value))
    if text and not _LOGFMT_QUOTE_RE.search(text):
        return text
    return '"' + text.replace('"', '\\"') + '"'


def _render_text(record: Record) -> str:
    extra = record["extra"]
    role, worker, job_id, job_type, attempt = (_text_value(extra.get(k)) for k in _CORE_FIELDS)
    line = (
        f"{_utc_time(record)} | {_escape(record['level'].name)} | {role} | {worker} | "
        f"job={job_id} | type={job_type} | attempt={attempt} | {_escape(record['message'])}"
    )
    pairs = [
        f"{_escape(_to_text(key))}={_logfmt_value(value)}"
        for key, value in extra.items()
        if key not in _CORE_FIELDS and not str(key).startswith(_PRIVATE_PREFIX)
    ]
    if pairs:
        line += " | " + " ".join(pairs)
    for tb_line in _traceback_lines(record):
        line += "\n" + _TRACEBACK_PREFIX + _escape(tb_line)
    return line


def _json_safe(value: Any) -> Any:
    """``value`` with only JSON types inside (str() of anything else), keys as str."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, dict):
        return {_to_text(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return _to_text(value)


def _render_json(record: Record) -> str:
    extra = record["extra"]
    data: dict[str, Any] = {
        "time": _utc_time(record),
        "level": record["level"].name,
        "role": extra.get("role"),
        "worker": extra.get("worker"),
        "job_id": extra.get("job_id"),
        "type": extra.get("type"),
        "attempt": extra.get("attempt"),
        "event": record["message"],
    }
    for key, value in extra.items():
        name = _to_text(key)
        if name in _CORE_FIELDS or name.startswith(_PRIVATE_PREFIX):
            continue
        data[f"extra_{name}" if name in _JSON_RESERVED else name] = value
    tb_lines = _traceback_lines(record)
    if tb_lines:
        data["exception"] = "\n".join(tb_lines)
    text = json.dumps(_json_safe(data), ensure_ascii=False, separators=(",", ":"))
    return _JSON_UNSAFE_RE.sub(_json_escape_char, text)


def _format_text(record: Record) -> str:
    # The line goes through extra, never into the returned template: loguru would parse braces
    # in user text as format fields. Both sinks share one rendering per record.
    extra = record["extra"]
    if _TEXT_KEY not in extra:
        extra[_TEXT_KEY] = _render_text(record)
    return "{extra[" + _TEXT_KEY + "]}\n"


def _format_json(record: Record) -> str:
    extra = record["extra"]
    if _JSON_KEY not in extra:
        extra[_JSON_KEY] = _render_json(record)
    return "{extra[" + _JSON_KEY + "]}\n"


# --- job events in batches -----------------------------------------------------------------


def _safe_text(value: str) -> str:
    """A column value as the text format shows it; plain ASCII (ids, names) as it is."""
    if value and value.isascii() and value.isprintable():
        return value
    return _text_value(value)


def _logfmt_pairs(extra: tuple[tuple[str, object], ...]) -> str:
    return " | " + " ".join(f"{_escape(key)}={_logfmt_value(value)}" for key, value in extra)


# Rendered logfmt tails of the few distinct extras the worker uses (("queue", q),).
_pairs_cache: dict[tuple[tuple[str, object], ...], str] = {}
_PAIRS_CACHE_MAX = 256

_LEVEL_NOS = {"DEBUG": 10, "INFO": 20, "SUCCESS": 25, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
_second_cache: list[Any] = [-1, ""]


def _utc_now_text(now: float) -> str:
    """``now`` (epoch seconds) as the line's time column; the seconds part is cached."""
    second = int(now)
    cache = _second_cache
    if cache[0] != second:
        cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        cache[0] = second
    return f"{cache[1]}.{int((now - second) * 1000):03d}Z"


class EventBatch:
    """Job event lines rendered cheaply and written through loguru a batch per call.

    For the worker's hot path: :meth:`add` renders one event line at once (the time is the
    moment of the call) in exactly the format of a ``logger.bind(job_id=..., type=...,
    attempt=..., **extra).log(level, message)`` call, escaping included; :meth:`write` hands
    every line added so far to the sinks in one loguru call per run of same-level lines, so a
    batch of 50 events costs about what one ordinary log call does. Add and write in one
    synchronous stretch of code (no ``await`` between them) and the lines keep their place
    among all other log lines of the event loop. Events below the configured level are not
    even rendered. Without :func:`configure_logging` (the core used as a library) each event
    is an ordinary loguru call.
    """

    __slots__ = ("_runs",)

    def __init__(self) -> None:
        self._runs: list[tuple[str, list[str]]] = []

    def enabled(self, level: str) -> bool:
        """Whether an event of ``level`` would be written by our sinks."""
        return not _state.active or _LEVEL_NOS.get(level, 0) >= _state.level_no

    def add(
        self,
        level: str,
        job_id: str,
        job_type: str,
        attempt: int | None,
        message: str,
        extra: tuple[tuple[str, object], ...] = (),
    ) -> None:
        """Render one event line (``extra``: ``(key, value)`` pairs after the message)."""
        state = _state
        if not state.active:
            bound = logger.bind(job_id=job_id, type=job_type, attempt=attempt, **dict(extra))
            bound.log(level, message)
            return
        if _LEVEL_NOS.get(level, 0) < state.level_no:
            return
        stamp = _utc_now_text(time.time())
        if state.json_lines:
            data: dict[str, Any] = {
                "time": stamp,
                "level": level,
                "role": state.role,
                "worker": state.worker,
                "job_id": job_id,
                "type": job_type,
                "attempt": attempt,
                "event": message,
            }
            for key, value in extra:
                data[f"extra_{key}" if key in _JSON_RESERVED else key] = value
            text = json.dumps(_json_safe(data), ensure_ascii=False, separators=(",", ":"))
            line = _JSON_UNSAFE_RE.sub(_json_escape_char, text)
        else:
            shown_attempt = _MISSING if attempt is None else attempt
            if not (message.isascii() and message.isprintable()):
                message = _escape(message)
            line = (
                f"{stamp} | {level} | {state.role_text} | {state.worker_text}"
                f" | job={_safe_text(job_id)} | type={_safe_text(job_type)}"
                f" | attempt={shown_attempt} | {message}"
            )
            if extra:
                cacheable = len(extra) == 1 and type(extra[0][1]) is str
                pairs = _pairs_cache.get(extra) if cacheable else None
                if pairs is None:
                    pairs = _logfmt_pairs(extra)
                    if cacheable and len(_pairs_cache) < _PAIRS_CACHE_MAX:
                        _pairs_cache[extra] = pairs
                line += pairs
        runs = self._runs
        if runs and runs[-1][0] == level:
            runs[-1][1].append(line)
        else:
            runs.append((level, [line]))

    def write(self) -> None:
        """Hand the lines added so far to the sinks, then start empty."""
        runs, self._runs = self._runs, []
        key = _JSON_KEY if _state.json_lines else _TEXT_KEY
        for level, lines in runs:
            # The text is carried pre-rendered in the private extra key the formatters use,
            # so it is neither escaped again nor rendered as one event of its own.
            logger.bind(**{key: "\n".join(lines)}).log(level, "{} job events", len(lines))

    def __len__(self) -> int:
        return sum(len(lines) for _level, lines in self._runs)


# --- set-up ---------------------------------------------------------------------------------


def _remove_handlers(handler_ids: list[int]) -> None:
    for handler_id in handler_ids:
        with contextlib.suppress(ValueError):  # already removed by someone else
            logger.remove(handler_id)


def configure_logging(
    *,
    role: str,
    log_file: str | os.PathLike[str] | None = DEFAULT_LOG_FILE,
    json_lines: bool = False,
    level: str = "INFO",
    stderr: bool = True,
    rotation: str = "20 MB",
    retention: int = 5,
    worker_id: str | None = None,
    enqueue: bool = True,
) -> None:
    """Send the event log to ``log_file`` and stderr; call once from an entry point.

    ``role`` is ``"producer"``, ``"worker"`` or ``"cli"``; ``worker_id`` the default of the
    ``worker`` column (a bound ``worker=`` wins). ``log_file`` ``None`` or ``""`` disables the
    file sink, ``stderr=False`` the stderr one. The file rotates when it reaches ``rotation``
    (a loguru size such as ``"20 MB"``), ``retention`` rotated files are kept, UTF-8.
    ``json_lines`` switches both sinks to JSON lines. ``level`` is a loguru level name, any
    case. ``enqueue`` hands lines to a writer thread so a log call never waits on the disk.

    loguru's default stderr handler is removed. Calling again replaces the sinks this module
    added (no duplicated lines); if the new sinks cannot be added the old ones stay. Env
    fallbacks (``WORKQUEUE_LOG_FILE``...) are the CLI's business, not this function's.
    """
    level = level.upper()
    logger.level(level)  # ValueError for an unknown level, before anything changes
    if retention < 0:
        raise ValueError(f"retention must be >= 0, got {retention}")
    defaults: dict[str, Any] = {
        "role": role,
        "worker": worker_id,
        "job_id": None,
        "type": None,
        "attempt": None,
    }
    fmt = _format_json if json_lines else _format_text
    with _lock:
        new_ids: list[int] = []
        try:
            if log_file:
                new_ids.append(
                    logger.add(
                        os.path.abspath(os.fspath(log_file)),
                        level=level,
                        format=fmt,
                        rotation=rotation,
                        retention=retention,
                        encoding="utf-8",
                        enqueue=enqueue,
                        colorize=False,
                        backtrace=False,
                        diagnose=False,
                    )
                )
            if stderr and sys.stderr is not None:
                new_ids.append(
                    logger.add(
                        sys.stderr,
                        level=level,
                        format=fmt,
                        enqueue=enqueue,
                        colorize=False,
                        backtrace=False,
                        diagnose=False,
                    )
                )
        except BaseException:
            _remove_handlers(new_ids)
            raise
        old_ids = _state.handler_ids
        _state.handler_ids = new_ids
        _state.json_lines = json_lines
        _state.level_no = logger.level(level).no
        _state.role, _state.worker = role, worker_id
        _state.role_text, _state.worker_text = _text_value(role), _text_value(worker_id)
        _state.active = True
        logger.configure(extra=defaults, patcher=_patch)
        _remove_handlers([0, *old_ids])  # 0 is loguru's default stderr handler


def shutdown_logging() -> None:
    """Write every queued line and remove the sinks :func:`configure_logging` added.

    Safe to call more than once, and without a configure_logging call before it. Afterwards
    the core logger has no default extras and the patcher does nothing.
    """
    with _lock:
        logger.complete()
        _remove_handlers(_state.handler_ids)
        _state.handler_ids = []
        _state.active = False
        _state.json_lines = False
        _state.level_no = 0
        logger.configure(extra={})
