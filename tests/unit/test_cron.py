"""The next-fire computation of schedules (pure functions): expressions, DST transitions in
Europe/Berlin and America/New_York, missed ticks, and Schedule validation."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from workqueue import Schedule
from workqueue.errors import TaskValidationError
from workqueue.schedules.cron import (
    CronError,
    due_tick_ms,
    next_tick_ms,
    normalize,
    prev_tick_ms,
    zone,
)
from workqueue.schedules.model import tick_idempotency_key, tick_job_id

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def ms(*parts: int, tz: ZoneInfo | type[UTC] = UTC, fold: int = 0) -> int:
    moment = datetime(*parts, tzinfo=tz, fold=fold)  # type: ignore[arg-type]
    return round(moment.timestamp() * 1000)


def walk(expr: str, tz: ZoneInfo, start: int, n: int) -> list[str]:
    """The next ``n`` ticks after ``start``, as local ISO times with their offsets."""
    out, t = [], start
    for _ in range(n):
        nxt = next_tick_ms(expr, tz, t)
        assert nxt is not None and nxt > t
        out.append(datetime.fromtimestamp(nxt / 1000, tz).isoformat())
        t = nxt
    return out


# -- expressions ------------------------------------------------------------------------------


def test_five_and_six_fields_are_accepted_and_normalised() -> None:
    assert normalize("  */5   * * * *") == "*/5 * * * *"
    assert normalize("*/10 * * * * *") == "*/10 * * * * *"


@pytest.mark.parametrize(
    "expr", ["", "* * * *", "* * * * * * *", "61 * * * *", "* 25 * * *", "0 0 30 2 *", "x y z"]
)
def test_invalid_expressions_are_refused(expr: str) -> None:
    with pytest.raises(CronError):
        normalize(expr)


def test_six_fields_put_seconds_first() -> None:
    start = ms(2026, 1, 1)
    assert next_tick_ms("*/15 * * * * *", ZoneInfo("UTC"), start) == start + 15_000
    assert next_tick_ms("30 0 * * * *", ZoneInfo("UTC"), start) == start + 30_000
    assert next_tick_ms("0 30 * * * *", ZoneInfo("UTC"), start) == start + 30 * 60_000


def test_next_is_strictly_after_and_prev_is_at_or_before() -> None:
    utc = ZoneInfo("UTC")
    at = ms(2026, 1, 1, 12, 0, 0)
    assert next_tick_ms("* * * * * *", utc, at) == at + 1000
    assert next_tick_ms("* * * * * *", utc, at + 1) == at + 1000
    assert prev_tick_ms("* * * * * *", utc, at) == at
    assert prev_tick_ms("* * * * * *", utc, at + 999) == at
    assert prev_tick_ms("0 0 * * 1", utc, ms(2026, 1, 1)) == ms(2025, 12, 29)


def test_unknown_time_zones_are_refused() -> None:
    assert zone("Europe/Berlin").key == "Europe/Berlin"
    for name in ("Mars/Olympus", "", "../etc/passwd", "/etc/localtime"):
        with pytest.raises(CronError):
            zone(name)


# -- DST: spring forward (a local hour does not exist) ----------------------------------------


def test_berlin_spring_forward_a_skipped_daily_time_fires_once_at_the_end_of_the_gap() -> None:
    # 2026-03-29: 02:00 CET -> 03:00 CEST
    ticks = walk("30 2 * * *", BERLIN, ms(2026, 3, 28, 12, tz=BERLIN), 3)
    assert ticks == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


def test_berlin_spring_forward_skipped_ticks_of_a_rhythm_merge_into_one() -> None:
    ticks = walk("*/15 * * * *", BERLIN, ms(2026, 3, 29, 1, 30, tz=BERLIN), 4)
    # 02:00, 02:15, 02:30, 02:45 do not exist: one firing at 03:00 (which is a tick itself)
    assert ticks == [
        "2026-03-29T01:45:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:15:00+02:00",
        "2026-03-29T03:30:00+02:00",
    ]


def test_new_york_spring_forward_six_fields_follow_the_same_rule() -> None:
    # 2026-03-08: 02:00 EST -> 03:00 EDT
    ticks = walk("0 30 2 * * *", NEW_YORK, ms(2026, 3, 7, 12, tz=NEW_YORK), 2)
    assert ticks == ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
    seconds = walk("*/20 * 2 * * *", NEW_YORK, ms(2026, 3, 8, 1, 59, tz=NEW_YORK), 2)
    assert seconds == ["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"]


# -- DST: fall back (a local hour happens twice) ----------------------------------------------


def test_berlin_fall_back_a_repeated_local_time_fires_once_at_its_first_occurrence() -> None:
    # 2026-10-25: 03:00 CEST -> 02:00 CET, 02:00-02:59 twice
    ticks = walk("30 2 * * *", BERLIN, ms(2026, 10, 24, 12, tz=BERLIN), 2)
    assert ticks == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]


def test_berlin_fall_back_a_rhythm_does_not_repeat_the_second_pass() -> None:
    ticks = walk("*/30 * * * *", BERLIN, ms(2026, 10, 25, 1, 0, tz=BERLIN), 5)
    assert ticks == [
        "2026-10-25T01:30:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T03:30:00+01:00",
    ]


def test_new_york_fall_back_once_even_when_asked_from_inside_the_second_pass() -> None:
    # 2026-11-01: 02:00 EDT -> 01:00 EST, 01:00-01:59 twice
    first = walk("30 1 * * *", NEW_YORK, ms(2026, 10, 31, 12, tz=NEW_YORK), 2)
    assert first == ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    # a scheduler that last fired during the second 01:xx (e.g. an anchor set then)
    inside = ms(2026, 11, 1, 1, 10, tz=NEW_YORK, fold=1)
    assert walk("30 1 * * *", NEW_YORK, inside, 1) == ["2026-11-02T01:30:00-05:00"]
    six = walk("0 */20 1 * * *", NEW_YORK, inside, 1)
    assert six == ["2026-11-02T01:00:00-05:00"]


def test_due_tick_over_a_dst_gap_is_the_merged_instant() -> None:
    after = ms(2026, 3, 29, 1, 50, tz=BERLIN)
    now = ms(2026, 3, 29, 3, 0, 5, tz=BERLIN)
    tick, following = due_tick_ms("*/15 * * * *", BERLIN, after, now, catch_up_ms=60_000)
    assert tick == ms(2026, 3, 29, 3, 0, tz=BERLIN)
    assert following == ms(2026, 3, 29, 3, 15, tz=BERLIN)


# -- missed ticks ------------------------------------------------------------------------------


def test_a_scheduler_that_fell_a_little_behind_fires_each_tick_in_order() -> None:
    utc = ZoneInfo("UTC")
    last = ms(2026, 1, 1, 0, 0, 0)
    now = last + 4_500
    tick, following = due_tick_ms("* * * * * *", utc, last, now, catch_up_ms=10_000)
    assert (tick, following) == (last + 1000, last + 2000)


def test_ticks_missed_beyond_the_catch_up_fire_once_the_latest() -> None:
    utc = ZoneInfo("UTC")
    last = ms(2026, 1, 1, 0, 0, 0)
    now = last + 3 * 3600_000 + 500  # three hours without a scheduler
    tick, following = due_tick_ms("*/5 * * * *", utc, last, now, catch_up_ms=10_000)
    assert tick == last + 3 * 3600_000
    assert following == tick + 5 * 60_000
    # a weekly schedule missed for two weeks: one firing, the latest
    weekly, _ = due_tick_ms("0 9 * * 1", utc, ms(2026, 1, 5, 9), ms(2026, 1, 21), 10_000)
    assert weekly == ms(2026, 1, 19, 9)


def test_nothing_is_due_before_the_next_tick() -> None:
    utc = ZoneInfo("UTC")
    last = ms(2026, 1, 1, 0, 0, 0)
    assert due_tick_ms("0 * * * *", utc, last, last + 60_000, 10_000) == (None, last + 3600_000)


# -- the Schedule model -----------------------------------------------------------------------


def test_schedule_validates_each_field_and_names_it() -> None:
    ok = Schedule(name="n", cron="  0 3 * * *", type="t", payload={"a": [1]}, timezone="Asia/Tokyo")
    assert ok.cron == "0 3 * * *"
    assert ok.definition()["payload"] == '{"a":[1]}'
    bad = {
        "name": {"name": "a b"},
        "type": {"type": "{x}"},
        "queue": {"queue": "q#1"},
        "cron": {"cron": "* * *"},
        "timezone": {"timezone": "Nowhere/Town"},
        "payload": {"payload": {"a": object()}},
    }
    for field, change in bad.items():
        values = {"name": "n", "cron": "* * * * *", "type": "t", **change}
        with pytest.raises(TaskValidationError) as caught:
            Schedule(**values)  # type: ignore[arg-type]
        assert caught.value.field == field


def test_tick_ids_are_derived_from_name_and_tick() -> None:
    assert tick_job_id("a", 1000) == tick_job_id("a", 1000)
    assert len({tick_job_id("a", 1000), tick_job_id("a", 2000), tick_job_id("b", 1000)}) == 3
    assert len(tick_job_id("a", 1000)) == 32
    assert tick_idempotency_key("a", 1000) == "cron:a:1000"
