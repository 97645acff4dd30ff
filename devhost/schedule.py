"""Timer schedules as the Functions host reads them: NCRONTAB expressions and TimeSpan intervals.

NCRONTAB (the library the host uses) has six fields, ``second minute hour day month day-of-week``;
five-field expressions are accepted with the seconds fixed at 0, as the host also accepts them.
Each field is a comma-separated list of ``*``, ``n``, ``a-b``, optionally followed by ``/step``
(``n/step`` means from n to the field's maximum). Months and days of week may be given by
name (``jan``, ``January``, ``mon``, ``Monday``; case-insensitive). Days of week run 0-6 with 0 =
Sunday. As in NCRONTAB, and unlike classic cron, a time must match day-of-month *and*
day-of-week when both are restricted.

A schedule without spaces is a TimeSpan (``hh:mm:ss``, ``d.hh:mm:ss``): a fixed interval.

All computation is on whatever datetimes are passed in; the dev host passes UTC, which is
what Azure uses unless WEBSITE_TIME_ZONE is set.
"""
from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = [
    "ScheduleError", "CronSchedule", "IntervalSchedule", "parse_schedule", "parse_timespan",
]


class ScheduleError(ValueError):
    """A schedule or TimeSpan string that cannot be parsed."""


_MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december"]
_DAYS = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"]


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] is the value low + i


_FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day", 1, 31),
    _Field("month", 1, 12, tuple(_MONTHS)),
    _Field("day-of-week", 0, 6, tuple(_DAYS)),
)


def _value(token: str, field: _Field, expr: str) -> int:
    if token.isdigit():
        v = int(token)
    else:
        low = token.lower()
        # A name is its three-letter abbreviation or the full name.
        matches = [i for i, n in enumerate(field.names) if len(low) >= 3 and n.startswith(low)
                   and (len(low) == 3 or low == n)]
        if not matches:
            raise ScheduleError(f"{expr!r}: {token!r} is not a valid {field.name}")
        v = field.low + matches[0]
    if not field.low <= v <= field.high:
        raise ScheduleError(
            f"{expr!r}: {field.name} {v} is outside {field.low}-{field.high}")
    return v


def _parse_field(text: str, field: _Field, expr: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise ScheduleError(f"{expr!r}: empty list item in the {field.name} field")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"{expr!r}: bad step {step_text!r} in the {field.name} field")
            step = int(step_text)
        if base == "*":
            start, stop = field.low, field.high
        elif "-" in base:
            a, _, b = base.partition("-")
            start, stop = _value(a, field, expr), _value(b, field, expr)
            if start > stop:
                raise ScheduleError(f"{expr!r}: range {base!r} runs backwards in the {field.name} field")
        else:
            start = _value(base, field, expr)
            stop = field.high if slash else start
        values.update(range(start, stop + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed NCRONTAB expression; ``next_after(t)`` is the first matching second after t."""

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]  # 0 = Sunday

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        parts = expression.split()
        if len(parts) == 5:
            parts = ["0", *parts]
        if len(parts) != 6:
            raise ScheduleError(
                f"{expression!r}: an NCRONTAB expression has 6 fields "
                "(second minute hour day month day-of-week), or 5 without the seconds")
        sets = [_parse_field(p, f, expression) for p, f in zip(parts, _FIELDS, strict=True)]
        sched = cls(expression, *sets)
        if not any(d <= _max_days(m) for m in sched.months for d in sched.days):
            raise ScheduleError(f"{expression!r}: no month in the schedule has any of its days")
        return sched

    def matches(self, t: datetime) -> bool:
        return (t.second in self.seconds and t.minute in self.minutes and t.hour in self.hours
                and self._day_ok(t))

    def _day_ok(self, t: datetime) -> bool:
        # Python: Monday=0 .. Sunday=6; NCRONTAB: Sunday=0 .. Saturday=6.
        return (t.month in self.months and t.day in self.days
                and (t.weekday() + 1) % 7 in self.days_of_week)

    def next_after(self, after: datetime) -> datetime:
        """The first time strictly after ``after`` (whole seconds) that the schedule matches."""
        t = after.replace(microsecond=0) + timedelta(seconds=1)
        limit = t.replace(year=t.year + 400) if t.year + 400 <= 9999 else datetime.max.replace(tzinfo=t.tzinfo)
        while t < limit:
            if t.month not in self.months or not self._day_ok(t):
                # Jump to the start of the next day (or month when the month is excluded).
                if t.month not in self.months:
                    y, m = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
                    t = t.replace(year=y, month=m, day=1, hour=0, minute=0, second=0)
                else:
                    t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
                continue
            if t.hour not in self.hours:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
                continue
            if t.minute not in self.minutes:
                t = t.replace(second=0) + timedelta(minutes=1)
                continue
            if t.second not in self.seconds:
                t = t + timedelta(seconds=1)
                continue
            return t
        raise ScheduleError(f"{self.expression!r} has no occurrence after {after.isoformat()}")


def _max_days(month: int) -> int:
    return 29 if month == 2 else calendar.monthrange(2001, month)[1]


@dataclass(frozen=True)
class IntervalSchedule:
    """A TimeSpan schedule: fires every ``interval`` after the previous occurrence."""

    expression: str
    interval: timedelta

    def next_after(self, after: datetime) -> datetime:
        return after + self.interval


_TIMESPAN = re.compile(
    r"^(?P<neg>-)?(?:(?P<days>\d+)\.)?(?P<h>\d+):(?P<m>\d+)(?::(?P<s>\d+)(?:\.(?P<f>\d{1,7}))?)?$")


def parse_timespan(text: str | int | float) -> timedelta:
    """A .NET TimeSpan string (``hh:mm[:ss[.fffffff]]``, ``d.hh:mm:ss``, or a whole number of days).

    Numbers (int/float) are taken as milliseconds, the Functions 1.x host.json convention that the
    later hosts still accept for ``maxPollingInterval``.
    """
    if isinstance(text, bool):
        raise ScheduleError(f"{text!r} is not a TimeSpan")
    if isinstance(text, (int, float)):
        return timedelta(milliseconds=text)
    s = str(text).strip()
    if s.isdigit():
        return timedelta(days=int(s))
    m = _TIMESPAN.match(s)
    if not m:
        raise ScheduleError(f"{text!r} is not a TimeSpan (expected hh:mm:ss or d.hh:mm:ss)")
    h, mi, sec = int(m["h"]), int(m["m"]), int(m["s"] or 0)
    if h > 23 or mi > 59 or sec > 59:
        raise ScheduleError(f"{text!r}: hours must be 0-23 and minutes/seconds 0-59")
    frac = int((m["f"] or "0").ljust(7, "0")) / 10_000_000
    td = timedelta(days=int(m["days"] or 0), hours=h, minutes=mi, seconds=sec + frac)
    return -td if m["neg"] else td


def parse_schedule(expression: str) -> CronSchedule | IntervalSchedule:
    """An NCRONTAB expression (has spaces) or a TimeSpan interval (no spaces)."""
    expr = expression.strip()
    if " " in expr or "\t" in expr:
        return CronSchedule.parse(expr)
    interval = parse_timespan(expr)
    if interval <= timedelta(0):
        raise ScheduleError(f"{expression!r}: a TimeSpan schedule must be positive")
    return IntervalSchedule(expr, interval)
