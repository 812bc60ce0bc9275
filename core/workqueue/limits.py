"""Fleet-wide limits per job type (SPEC section 12): the rate and concurrency a type may use.

Pure values and validation, shared by ``JobType`` (declared limits), the CLI (run-time limits
kept in Redis), the task validation (``limit_key``) and the worker (which enforces them through
``workqueue.broker.limits``). No Redis here.

- A **rate** is ``"<count>/<unit>"`` with unit ``s``, ``m`` or ``h`` (``"100/s"``, ``"10/m"``,
  ``"5/h"``): at most ``count`` starts per period, as a token bucket of ``count`` tokens
  refilled one every ``period / count`` (GCRA). Over any stretch of time ``D`` the starts are at
  most ``count * D / period + count``: the error is within one period's worth.
- A **concurrency** limit is an integer >= 1: at most that many attempts of the type (or of
  one ``(type, limit_key)``) run at once across all workers.
- A task's ``limit_key`` (e.g. a customer id) makes the limits of its type apply per
  ``(type, limit_key)``: every key has its own bucket; jobs without a key share the type's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from workqueue.errors import ConfigurationError

__all__ = [
    "LIMIT_KEY_PATTERN",
    "LimitSpec",
    "Rate",
    "bucket_name",
    "check_limit_key",
    "parse_concurrency",
    "parse_rate",
]

_UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000}
_RATE = re.compile(r"^\s*(\d{1,9})\s*/\s*([smh])\s*\Z")
#: the most starts per period a rate may allow (a sanity bound, not a performance one)
MAX_RATE_COUNT = 1_000_000
#: the most concurrent attempts a limit may allow
MAX_CONCURRENCY = 1_000_000

#: A task's limit_key: 1-128 characters of ``A-Za-z0-9_.:@+=/-`` (no braces: it sits inside a
#: Redis hash tag; no ``#``: it separates the type from the key in a bucket's name).
LIMIT_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_.:@+=/\-]{1,128}\Z")


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` starts per ``period_ms`` milliseconds."""

    count: int
    period_ms: int

    def __str__(self) -> str:
        unit = {v: k for k, v in _UNITS_MS.items()}[self.period_ms]
        return f"{self.count}/{unit}"


def parse_rate(text: object, *, what: str = "rate_limit") -> Rate:
    """``"100/s"`` -> :class:`Rate`; a :class:`ConfigurationError` that shows the form
    otherwise."""
    match = _RATE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigurationError(
            f"{what} {text!r} is not a rate: write <count>/<unit> with unit s, m or h "
            "(e.g. '100/s', '10/m', '5/h')"
        )
    count = int(match.group(1))
    if not 1 <= count <= MAX_RATE_COUNT:
        raise ConfigurationError(f"{what} {text!r}: the count must be 1 to {MAX_RATE_COUNT}")
    return Rate(count, _UNITS_MS[match.group(2)])


def parse_concurrency(value: object, *, what: str = "concurrency_limit") -> int:
    """An integer 1..MAX_CONCURRENCY, else a :class:`ConfigurationError`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{what} {value!r} must be an integer >= 1")
    if not 1 <= value <= MAX_CONCURRENCY:
        raise ConfigurationError(f"{what} {value!r} must be 1 to {MAX_CONCURRENCY}")
    return value


def check_limit_key(value: object) -> str:
    """The limit key itself when valid; else a ValueError saying what is allowed."""
    if not isinstance(value, str) or not LIMIT_KEY_PATTERN.match(value):
        raise ValueError("must be 1-128 characters of A-Za-z0-9_.:@+=/-")
    return value


def bucket_name(job_type: str, limit_key: str = "") -> str:
    """The name of a limit bucket (the inside of its Redis hash tag): the type, or
    ``<type>#<limit_key>``. ``#`` is in neither charset, so two buckets never share a name."""
    return f"{job_type}#{limit_key}" if limit_key else job_type


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """The limits of one job type: a rate, a concurrency, either or both (None: no limit)."""

    rate: Rate | None = None
    concurrency: int | None = None

    @property
    def limited(self) -> bool:
        """True when the type has any limit (its jobs then take the limit step)."""
        return self.rate is not None or self.concurrency is not None

    def describe(self) -> dict[str, object]:
        """The JSON shape the CLI prints: ``{"rate": "100/s" | None, "concurrency": 5 | None}``."""
        return {
            "rate": str(self.rate) if self.rate else None,
            "concurrency": self.concurrency,
        }
