"""Cron expressions and their ticks: pure functions on epoch milliseconds (no Redis, no clock).

Expressions are parsed and walked by `cronsim <https://pypi.org/project/cronsim/>`_: five
fields (minute hour day-of-month month day-of-week) or six with a *leading* seconds field.

Time zones and DST: a schedule follows the **local wall clock** of its time zone. cronsim walks
the local times that match the expression (as naive times, in order) and this module maps each
one to an instant:

* a local time that exists once is that instant;
* a local time that exists twice (the repeated hour when clocks go back) is its **first**
  occurrence; the second pass of that hour fires nothing, so a repeated local hour fires once;
* a local time that does not exist (the hour skipped when clocks go forward) fires at the
  **first valid instant after the gap** (e.g. 03:00 in Europe/Berlin); several skipped local
  times map to that one instant and fire **once** (a tick is identified by its instant).

So ``30 2 * * *`` in Europe/Berlin fires once every day, at 03:00 on the spring-forward day and
at 02:30 CEST on the fall-back day; ``*/15 * * * *`` fires once at 03:00 on the spring-forward
day (for 02:00-02:45) and not during the second pass of 02:00-02:59 on the fall-back day. A
schedule that must keep an elapsed-time rhythm across DST uses ``timezone="UTC"``.

Missed ticks: :func:`due_tick_ms` answers the tick to fire now. Ticks are fired one by one, in
order, while the oldest unfired one is at most ``catch_up_ms`` old (a scheduler that fell a
little behind catches up); when it is older (no scheduler ran), only the **latest** due tick
fires, once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

__all__ = [
    "CronError",
    "due_tick_ms",
    "instant_ms",
    "local_time",
    "next_tick_ms",
    "normalize",
    "prev_tick_ms",
    "zone",
]

#: the most local times one look-up walks past (an every-second schedule walking one repeated
#: hour takes 3600)
_MAX_STEPS = 100_000
_EPOCH = datetime(1970, 1, 1)


class CronError(ValueError):
    """Raised when a cron expression or a time zone name is not valid."""


def normalize(expr: str) -> str:
    """The expression with single spaces; raises :class:`CronError` if it is not valid.

    Five fields (minute resolution) or six (a leading seconds field); an expression that never
    fires (``0 0 30 2 *``) is refused too.
    """
    if not isinstance(expr, str):
        raise CronError("the cron expression must be a string")
    fields = expr.split()
    if len(fields) not in (5, 6):
        raise CronError(
            f"a cron expression has 5 fields (minute hour day month weekday) or 6 (a leading "
            f"seconds field); this one has {len(fields)}"
        )
    text = " ".join(fields)
    try:
        next(CronSim(text, datetime(2000, 1, 1)))
    except CronSimError as exc:
        raise CronError(f"invalid cron expression {text!r}: {exc}") from None
    except StopIteration:
        raise CronError(f"the cron expression {text!r} never fires") from None
    return text


def zone(name: str) -> ZoneInfo:
    """The IANA time zone called ``name`` (``UTC``, ``Europe/Berlin``...); :class:`CronError`
    if there is none."""
    if not isinstance(name, str) or not name or len(name) > 64 or name.startswith(("/", ".")):
        raise CronError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone {name!r} (use an IANA name such as UTC)") from None


def local_time(ms: int, tz: ZoneInfo) -> datetime:
    """The naive local wall-clock time of the instant ``ms`` in ``tz``."""
    return datetime.fromtimestamp(ms / 1000, tz).replace(tzinfo=None)


def _utc_ms(aware: datetime) -> int:
    return round(aware.astimezone(UTC).timestamp() * 1000)


def instant_ms(naive: datetime, tz: ZoneInfo) -> int:
    """The instant a local wall-clock time fires at (see the module docstring): itself, its
    first occurrence when it exists twice, or the first valid instant after a DST gap."""
    first = naive.replace(tzinfo=tz, fold=0)
    second = naive.replace(tzinfo=tz, fold=1)
    early, late = sorted((_utc_ms(first), _utc_ms(second)))
    if local_time(early, tz) == naive:
        return early  # exists (the first occurrence, if twice)
    # In a gap: `early` lies before the transition, `late` after it. Find the transition.
    offset_after = datetime.fromtimestamp(late / 1000, tz).utcoffset()
    lo, hi = early // 1000, -(-late // 1000)  # whole seconds: zone transitions are
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).utcoffset() == offset_after:
            hi = mid
        else:
            lo = mid
    return hi * 1000


def next_tick_ms(expr: str, tz: ZoneInfo, after_ms: int) -> int | None:
    """The first tick strictly after the instant ``after_ms`` (None: no tick within 50 years)."""
    walk = CronSim(expr, local_time(after_ms, tz))
    for _ in range(_MAX_STEPS):
        try:
            naive = next(walk)
        except StopIteration:
            return None
        tick = instant_ms(naive, tz)
        if tick > after_ms:
            return tick
    return None


def prev_tick_ms(expr: str, tz: ZoneInfo, at_ms: int) -> int | None:
    """The latest tick at or before the instant ``at_ms`` (None: none within 50 years)."""
    # cronsim walks back from a time with microseconds by first dropping them: so the local
    # second of `at_ms` itself is included.
    start = local_time(at_ms, tz) + timedelta(microseconds=1)
    walk = CronSim(expr, start, reverse=True)
    for _ in range(_MAX_STEPS):
        try:
            naive = next(walk)
        except StopIteration:
            return None
        tick = instant_ms(naive, tz)
        if tick <= at_ms:
            return tick
    return None


def due_tick_ms(
    expr: str, tz: ZoneInfo, after_ms: int, now_ms: int, catch_up_ms: int
) -> tuple[int | None, int | None]:
    """``(tick to fire now or None, the next tick after it or after now)``.

    ``after_ms`` is the last fired tick (or the moment the schedule was created or resumed).
    The tick to fire is the oldest unfired one while it is at most ``catch_up_ms`` old,
    otherwise the latest one at or before ``now_ms`` (missed ticks fire once).
    """
    oldest = next_tick_ms(expr, tz, after_ms)
    if oldest is None or oldest > now_ms:
        return None, oldest
    tick = oldest
    if now_ms - oldest > catch_up_ms:
        latest = prev_tick_ms(expr, tz, now_ms)
        if latest is not None and latest > tick:
            tick = latest
    return tick, next_tick_ms(expr, tz, tick)


def utc_text(ms: int) -> str:
    """``2026-03-29T01:00:00.000Z`` for an instant (for messages and listings)."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
