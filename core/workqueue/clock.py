"""The local wall clock, in one place.

No job deadline uses it: lease deadlines, due times of delayed and retrying jobs, finish times
and the worker registry's heartbeats are all stamped with Redis ``TIME`` inside the scripts,
and durations use the monotonic clock. The local wall clock only stamps what a process says
about itself (when it started, when it last fetched), so hosts whose clocks disagree cannot
reclaim each other's leases or run a delayed job early.

``WORKQUEUE_CLOCK_SKEW_SECONDS`` shifts this clock by that many seconds (a test and diagnostic
knob: it shows that nothing that matters depends on the host's clock).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

from workqueue.errors import ConfigurationError

__all__ = ["SKEW_ENV", "now", "now_datetime", "set_skew", "skew"]

SKEW_ENV = "WORKQUEUE_CLOCK_SKEW_SECONDS"

_skew: float | None = None


def _from_env() -> float:
    raw = os.environ.get(SKEW_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{SKEW_ENV} must be a number of seconds, not {raw!r}") from None


def skew() -> float:
    """Seconds this process's clock is shifted by (0 unless configured)."""
    global _skew
    if _skew is None:
        _skew = _from_env()
    return _skew


def set_skew(seconds: float | None) -> None:
    """Shift the clock by ``seconds`` (``None``: read ``WORKQUEUE_CLOCK_SKEW_SECONDS`` again)."""
    global _skew
    _skew = seconds


def now() -> float:
    """Seconds since the epoch on this process's (possibly shifted) wall clock."""
    return time.time() + skew()


def now_datetime() -> datetime:
    """:func:`now` as an aware UTC datetime."""
    return datetime.fromtimestamp(now(), UTC)
