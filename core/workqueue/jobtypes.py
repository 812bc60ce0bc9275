"""What a plugin registers: :class:`JobType`, and what a handler receives: :class:`JobContext`."""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from workqueue.errors import ConfigurationError
from workqueue.limits import LimitSpec, parse_concurrency, parse_rate

if TYPE_CHECKING:
    from loguru import Logger

__all__ = [
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT_SECONDS",
    "MAX_PROGRESS_BYTES",
    "NAME_PATTERN",
    "Backoff",
    "CancelFlag",
    "Handler",
    "Isolation",
    "JobContext",
    "JobType",
    "encode_progress",
]

#: Job type and queue names: 1-128 characters of ``A-Za-z0-9_.:-`` (no braces, so a queue name
#: can sit inside a Redis hash tag).
#: ``\Z``, not ``$``: a trailing newline is not part of a name
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}\Z")
DEFAULT_RETRIES = 3
DEFAULT_TIMEOUT_SECONDS = 300.0
#: the largest progress value ``ctx.set_progress`` accepts, JSON-encoded
MAX_PROGRESS_BYTES = 4096

#: A handler takes the (validated) payload and the job's context; it may be ``async def`` or a
#: plain ``def`` (run in a thread pool). Its JSON-able return value becomes the job's result.
Handler = Callable[[Any, "JobContext"], Awaitable[Any] | Any]

#: Where a handler runs: ``"none"`` in the worker process (``async def`` in its event loop, a
#: plain ``def`` in its thread pool); ``"process"`` in a child process of its own, killed at the
#: attempt's timeout or when the attempt is cancelled (for CPU-bound or untrusted code).
Isolation = Literal["none", "process"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter between failed attempts.

    The n-th retry waits ``min(max_seconds, base_seconds * factor ** (n - 1))``, of which the
    ``jitter`` fraction is randomised (1.0 = "full jitter": anywhere from 0 to the cap).
    """

    base_seconds: float = 1.0
    factor: float = 2.0
    max_seconds: float = 3600.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.base_seconds < 0 or self.max_seconds < 0:
            raise ConfigurationError("backoff seconds must not be negative")
        if self.factor < 1:
            raise ConfigurationError("backoff factor must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError("backoff jitter must be between 0 and 1")

    def delay_seconds(self, failure_number: int, rng: random.Random | None = None) -> float:
        """The wait before the retry after failed attempt number ``failure_number`` (1-based)."""
        exponent = max(0, failure_number - 1)
        # Cap the exponent so huge retry counts cannot overflow a float.
        ceiling = min(self.max_seconds, self.base_seconds * self.factor ** min(exponent, 64))
        spread = ceiling * self.jitter
        draw = (rng or random).random()
        return ceiling - spread + spread * draw

    def bounds(self, failure_number: int) -> tuple[float, float]:
        """The smallest and largest delay :meth:`delay_seconds` can return for that failure."""
        exponent = max(0, failure_number - 1)
        ceiling = min(self.max_seconds, self.base_seconds * self.factor ** min(exponent, 64))
        return ceiling - ceiling * self.jitter, ceiling


@dataclass(frozen=True, slots=True)
class JobType:
    """A kind of job a plugin can run.

    ``payload_schema`` may be a msgspec ``Struct``, a dataclass or a ``TypedDict``: payloads are
    validated against it at enqueue time and the handler receives the typed object. ``retries``
    and ``timeout`` are the defaults for tasks that do not set their own.

    ``isolation="process"`` runs each attempt in a child process that is killed at the
    attempt's timeout or when the attempt is cancelled (lease lost, graceful stop): for
    CPU-bound or untrusted code. The handler, payload and result must then be picklable (a
    module-level function, as plugin handlers are); ``ctx.logger`` writes to the worker's
    stderr, and each attempt pays a Python start-up (about 0.1-0.3 s).
    """

    name: str
    handler: Handler
    payload_schema: type[Any] | None = None
    retries: int = DEFAULT_RETRIES
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    backoff: Backoff = field(default_factory=Backoff)
    description: str = ""
    isolation: Isolation = "none"
    #: fleet-wide limits (SPEC 12; docs/scheduling.md "Limits"): starts per period ("100/s",
    #: "10/m", "5/h") and attempts running at once, across all workers; None = no limit
    rate_limit: str | None = None
    concurrency_limit: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_PATTERN.match(self.name):
            raise ConfigurationError(
                f"job type name {self.name!r} must be 1-128 characters of A-Za-z0-9_.:-"
            )
        if not callable(self.handler):
            raise ConfigurationError(f"job type {self.name!r}: handler is not callable")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ConfigurationError(f"job type {self.name!r}: retries must be an int >= 0")
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, int | float):
            raise ConfigurationError(f"job type {self.name!r}: timeout must be a number")
        if not self.timeout > 0:
            raise ConfigurationError(f"job type {self.name!r}: timeout must be > 0 seconds")
        if self.isolation not in ("none", "process"):
            raise ConfigurationError(
                f"job type {self.name!r}: isolation must be 'none' or 'process'"
            )
        self.limits()  # a bad rate_limit or concurrency_limit fails here, naming the type

    def limits(self) -> LimitSpec:
        """The limits declared on this type (validated; see ``workqueue.limits``)."""
        what = f"job type {self.name!r}:"
        return LimitSpec(
            parse_rate(self.rate_limit, what=f"{what} rate_limit")
            if self.rate_limit is not None
            else None,
            parse_concurrency(self.concurrency_limit, what=f"{what} concurrency_limit")
            if self.concurrency_limit is not None
            else None,
        )


class CancelFlag:
    """``ctx.cancelled``: set when the attempt is superseded or must stop.

    It becomes true when the job is cancelled (``POST /jobs/{id}/cancel``, ``workqueue jobs
    cancel``, ``Client.cancel``), when the attempt timed out, when its lease was lost (the
    job was handed on: any outcome of this attempt is dropped), or when a graceful stop hands
    the job back.
    An ``async def`` handler is cancelled as well; a plain ``def`` handler cannot be
    interrupted and should check ``ctx.cancelled`` (``if ctx.cancelled: ...`` or
    ``ctx.cancelled.is_set()``) between steps of long work and return early. Read-only for
    handlers; a plain attribute behind it, so checking it costs nothing and is thread-safe.
    """

    __slots__ = ("_cancelled",)

    def __init__(self) -> None:
        self._cancelled = False

    def is_set(self) -> bool:
        """True once the attempt has been cancelled (like ``threading.Event.is_set``)."""
        return self._cancelled

    def __bool__(self) -> bool:
        return self._cancelled

    def __repr__(self) -> str:
        return f"<cancelled={self._cancelled}>"

    def report_progress(self, encoded: str) -> None:
        """Where ``ctx.set_progress`` puts a checked value: the worker's run sends it to the
        broker; a context built outside a worker (tests, ``isolation="process"``) drops it."""


def encode_progress(value: Any) -> str:
    """A progress value as compact JSON, or :class:`ValueError`: a finite number or a
    JSON-serialisable object (a dict) of finite numbers, at most :data:`MAX_PROGRESS_BYTES`."""
    if isinstance(value, bool) or not isinstance(value, int | float | dict):
        raise ValueError(f"progress must be a number or a JSON object, not {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("progress must be a finite number")
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"progress is not JSON-serialisable with finite numbers: {exc}") from None
    if len(text.encode()) > MAX_PROGRESS_BYTES:
        raise ValueError(f"progress is over {MAX_PROGRESS_BYTES} bytes as JSON")
    return text


#: the flag of a context built outside a worker: never set
NEVER_CANCELLED = CancelFlag()


class JobContext(msgspec.Struct, frozen=True):
    """What a handler knows about the job it runs, and a logger bound to that job.

    Immutable; a msgspec ``Struct`` because the worker builds one per job.

    - ``token``: the attempt's fencing token, an integer that grows with every attempt of the
      job (every lease the broker hands out). A handler that writes to another store can keep
      the highest token it has seen per job and refuse a write carrying a lower one: that
      write comes from a superseded attempt (its lease expired and the job was handed on).
    - ``cancelled``: a :class:`CancelFlag`, true once this attempt must stop (the job was
      cancelled, timed out, lease lost, or handed back by a graceful stop). ``async def``
      handlers are cancelled too; a plain ``def`` handler should poll it in long loops.
    - :meth:`set_progress`: report how far the attempt got (shown as ``progress`` by
      ``GET /jobs/{id}`` and ``workqueue jobs show``).
    """

    job_id: str
    type: str
    queue: str
    attempt: int
    retries: int
    enqueued_at: datetime
    worker_id: str
    timeout: float
    logger: Logger
    token: int = 0
    cancelled: CancelFlag = NEVER_CANCELLED

    def set_progress(self, value: Any) -> None:
        """Report the attempt's progress: a finite number (``0.42``, ``1200``) or a small JSON
        object (``{"done": 120, "total": 500}``), at most 4 KB as JSON; anything else raises
        :class:`ValueError`. Cheap to call in a tight loop and from any thread: the worker
        sends the latest value at most every 0.5 s, and once more before the outcome, and
        Redis takes it only while this attempt's lease holds (a superseded attempt's value is
        refused). A handler with ``isolation="process"`` may call it, but its value is not
        sent."""
        self.cancelled.report_progress(encode_progress(value))
