"""What a plugin registers: :class:`JobType`, and what a handler receives: :class:`JobContext`."""

from __future__ import annotations

import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from workqueue.errors import ConfigurationError

if TYPE_CHECKING:
    from loguru import Logger

__all__ = [
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT_SECONDS",
    "NAME_PATTERN",
    "Backoff",
    "Handler",
    "JobContext",
    "JobType",
]

#: Job type and queue names: 1-128 characters of ``A-Za-z0-9_.:-`` (no braces, so a queue name
#: can sit inside a Redis hash tag).
#: ``\Z``, not ``$``: a trailing newline is not part of a name
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}\Z")
DEFAULT_RETRIES = 3
DEFAULT_TIMEOUT_SECONDS = 300.0

#: A handler takes the (validated) payload and the job's context; it may be ``async def`` or a
#: plain ``def`` (run in a thread pool). Its JSON-able return value becomes the job's result.
Handler = Callable[[Any, "JobContext"], Awaitable[Any] | Any]


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
    """

    name: str
    handler: Handler
    payload_schema: type[Any] | None = None
    retries: int = DEFAULT_RETRIES
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    backoff: Backoff = field(default_factory=Backoff)
    description: str = ""

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


class JobContext(msgspec.Struct, frozen=True):
    """What a handler knows about the job it runs, and a logger bound to that job.

    Immutable; a msgspec ``Struct`` because the worker builds one per job.
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
