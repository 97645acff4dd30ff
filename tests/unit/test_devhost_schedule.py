"""NCRONTAB and TimeSpan schedules of the dev host's timer trigger."""
from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from devhost.schedule import (
    CronSchedule,
    IntervalSchedule,
    ScheduleError,
    parse_schedule,
    parse_timespan,
)

UTC = UTC


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def occurrences(expr: str, start: datetime, n: int) -> list[datetime]:
    sched, out, t = CronSchedule.parse(expr), [], start
    for _ in range(n):
        t = sched.next_after(t)
        out.append(t)
    return out


# Examples from the Functions timer-trigger documentation.
@pytest.mark.parametrize("expr, start, expected", [
    ("0 */5 * * * *", at(2024, 1, 1, 10, 3, 7), [at(2024, 1, 1, 10, 5), at(2024, 1, 1, 10, 10)]),
    ("0 0 * * * *", at(2024, 1, 1, 10, 0, 0), [at(2024, 1, 1, 11), at(2024, 1, 1, 12)]),
    ("0 0 */2 * * *", at(2024, 1, 1, 1, 0, 0), [at(2024, 1, 1, 2), at(2024, 1, 1, 4)]),
    ("0 0 9-17 * * *", at(2024, 1, 1, 17, 0, 0), [at(2024, 1, 2, 9), at(2024, 1, 2, 10)]),
    ("0 30 9 * * *", at(2024, 1, 1, 9, 30, 0), [at(2024, 1, 2, 9, 30), at(2024, 1, 3, 9, 30)]),
    # 2024-01-05 is a Friday: next weekday 9:30 is Monday the 8th.
    ("0 30 9 * * 1-5", at(2024, 1, 5, 10, 0, 0), [at(2024, 1, 8, 9, 30), at(2024, 1, 9, 9, 30)]),
    ("0 30 9 * Jan Mon", at(2024, 1, 29, 10, 0, 0), [at(2025, 1, 6, 9, 30), at(2025, 1, 13, 9, 30)]),
    ("*/15 * * * * *", at(2024, 1, 1, 0, 0, 50), [at(2024, 1, 1, 0, 1, 0), at(2024, 1, 1, 0, 1, 15)]),
    ("5,10 * * * * *", at(2024, 1, 1, 0, 0, 5), [at(2024, 1, 1, 0, 0, 10), at(2024, 1, 1, 0, 1, 5)]),
    ("0 0 0 1-10/3 * *", at(2024, 1, 1, 0, 0, 0), [at(2024, 1, 4), at(2024, 1, 7), ]),
    ("0 0 0 29 2 *", at(2023, 3, 1), [at(2024, 2, 29), at(2028, 2, 29)]),
    ("0 0 12 31 * *", at(2024, 1, 31, 12), [at(2024, 3, 31, 12), at(2024, 5, 31, 12)]),
    ("0 0 0 * * sunday", at(2024, 1, 1), [at(2024, 1, 7), at(2024, 1, 14)]),
    ("0 0 0 1 DEC *", at(2024, 1, 1), [at(2024, 12, 1), at(2025, 12, 1)]),
    ("30 5/20 * * * *", at(2024, 1, 1, 0, 0, 0), [at(2024, 1, 1, 0, 5, 30), at(2024, 1, 1, 0, 25, 30)]),
])
def test_documented_examples(expr, start, expected):
    assert occurrences(expr, start, len(expected)) == expected


def test_five_fields_mean_seconds_zero():
    assert occurrences("*/10 * * * *", at(2024, 1, 1, 0, 0, 1), 2) == [at(2024, 1, 1, 0, 10), at(2024, 1, 1, 0, 20)]


def test_day_of_month_and_day_of_week_must_both_match():
    # NCRONTAB (unlike classic cron) ANDs the two day fields: Friday the 13th only.
    fridays_13 = occurrences("0 0 0 13 * 5", at(2024, 1, 1), 3)
    assert fridays_13 == [at(2024, 9, 13), at(2024, 12, 13), at(2025, 6, 13)]


def test_next_is_strictly_after_and_ignores_microseconds():
    s = CronSchedule.parse("* * * * * *")
    assert s.next_after(at(2024, 1, 1, 0, 0, 0)) == at(2024, 1, 1, 0, 0, 1)
    assert s.next_after(datetime(2024, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC)) == at(2024, 1, 1, 0, 0, 1)


def test_year_rollover_and_naive_datetimes():
    assert CronSchedule.parse("0 0 0 1 1 *").next_after(datetime(2024, 12, 31, 23, 59, 59)) == datetime(2025, 1, 1)


@pytest.mark.parametrize("expr, fragment", [
    ("* * * *", "6 fields"),
    ("* * * * * * *", "6 fields"),
    ("60 * * * * *", "second 60 is outside 0-59"),
    ("* * 24 * * *", "hour 24"),
    ("* * * 0 * *", "day 0"),
    ("* * * * 13 *", "month 13"),
    ("* * * * * 7", "day-of-week 7"),
    ("* * * * foo *", "'foo' is not a valid month"),
    ("*/0 * * * * *", "bad step"),
    ("10-5 * * * * *", "runs backwards"),
    ("1,,2 * * * * *", "empty list item"),
    ("0 0 0 30 2 *", "no month"),
    ("0 0 0 31 4,6,9,11 *", "no month"),
])
def test_invalid_expressions_say_what_is_wrong(expr, fragment):
    with pytest.raises(ScheduleError, match=fragment.replace("(", r"\(")):
        CronSchedule.parse(expr)


@pytest.mark.parametrize("text, expected", [
    ("00:00:30", timedelta(seconds=30)),
    ("00:05:00", timedelta(minutes=5)),
    ("01:00", timedelta(hours=1)),
    ("1.02:03:04", timedelta(days=1, hours=2, minutes=3, seconds=4)),
    ("00:00:00.100", timedelta(milliseconds=100)),
    ("00:00:00.5", timedelta(milliseconds=500)),
    ("2", timedelta(days=2)),
    (2000, timedelta(seconds=2)),  # Functions 1.x host.json: milliseconds
])
def test_timespans(text, expected):
    assert parse_timespan(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "1:2:3:4:5", "00:60:00", "24:00:00", True])
def test_bad_timespans(text):
    with pytest.raises(ScheduleError):
        parse_timespan(text)


def test_parse_schedule_picks_cron_or_interval():
    assert isinstance(parse_schedule("0 */5 * * * *"), CronSchedule)
    interval = parse_schedule("00:00:02")
    assert isinstance(interval, IntervalSchedule)
    assert interval.next_after(at(2024, 1, 1)) == at(2024, 1, 1, 0, 0, 2)
    with pytest.raises(ScheduleError, match="positive"):
        parse_schedule("00:00:00")


# ----------------------------------------------------------------------------- properties

def _field(low: int, high: int):
    value = st.integers(low, high)
    single = value.map(str)
    rng = st.tuples(value, value).map(lambda ab: f"{min(ab)}-{max(ab)}")
    step = st.integers(1, max(1, high - low))
    return st.one_of(
        st.just("*"),
        step.map(lambda n: f"*/{n}"),
        st.lists(single, min_size=1, max_size=3).map(",".join),
        rng,
        st.tuples(rng, step).map(lambda rs: f"{rs[0]}/{rs[1]}"),
    )


expressions = st.tuples(
    _field(0, 59), _field(0, 59), _field(0, 23), _field(1, 31), _field(1, 12), _field(0, 6),
).map(" ".join)

instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 12, 31),
                        timezones=st.just(UTC))


def reference_next(s: CronSchedule, after: datetime) -> datetime | None:
    """A slow, differently-structured oracle: walk days, then try each allowed time of day."""
    start = after.replace(microsecond=0) + timedelta(seconds=1)
    day = start.date()
    for _ in range(366 * 40):
        if day.month in s.months and day.day in s.days and (day.weekday() + 1) % 7 in s.days_of_week:
            for h in sorted(s.hours):
                for m in sorted(s.minutes):
                    for sec in sorted(s.seconds):
                        t = datetime.combine(day, time(h, m, sec), tzinfo=after.tzinfo)
                        if t >= start:
                            return t
        day += timedelta(days=1)
    return None


@settings(max_examples=300, deadline=None)
@given(expressions, instants)
def test_next_after_is_the_first_match(expr, after):
    try:
        s = CronSchedule.parse(expr)
    except ScheduleError:
        assume(False)
    expected = reference_next(s, after)
    assume(expected is not None)
    got = s.next_after(after)
    assert got == expected
    assert got > after and s.matches(got)


@settings(max_examples=100, deadline=None)
@given(expressions, instants)
def test_occurrences_increase_and_match(expr, after):
    try:
        s = CronSchedule.parse(expr)
    except ScheduleError:
        assume(False)
    assume(reference_next(s, after) is not None)
    t = after
    for _ in range(5):
        nxt = s.next_after(t)
        assert nxt > t and s.matches(nxt)
        t = nxt


def test_matches_uses_sunday_zero():
    s = CronSchedule.parse("0 0 0 * * 0")
    assert s.matches(datetime.combine(date(2024, 1, 7), time(0), tzinfo=UTC))  # a Sunday
    assert not s.matches(datetime.combine(date(2024, 1, 8), time(0), tzinfo=UTC))
