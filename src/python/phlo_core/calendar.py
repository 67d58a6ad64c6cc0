"""Local calendar days: a partition is a day in PHLO_TIMEZONE, whatever its length in hours."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo


class PartitionError(ValueError):
    """A partition key or range is malformed or outside the partitions; the message says what is
    valid."""


@dataclass(frozen=True)
class DayRange:
    """Local days [start, end): `end` is exclusive."""

    start: dt.date
    end: dt.date

    def days(self) -> Iterator[dt.date]:
        day = self.start
        while day < self.end:
            yield day
            day += dt.timedelta(days=1)

    def __len__(self) -> int:
        return (self.end - self.start).days

    def label(self) -> str:
        last = self.end - dt.timedelta(days=1)
        return self.start.isoformat() if last == self.start else f"{self.start}..{last}"


def local_midnight(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=tz)


def utc_bounds(days: DayRange, tz: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """The UTC instants at which the first local day starts and the day after the last starts."""
    return (
        local_midnight(days.start, tz).astimezone(dt.UTC),
        local_midnight(days.end, tz).astimezone(dt.UTC),
    )


def epoch_ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def minutes_in_day(day: dt.date, tz: ZoneInfo) -> int:
    """1440, or 1380 / 1500 on daylight-saving transition days."""
    start, end = utc_bounds(DayRange(day, day + dt.timedelta(days=1)), tz)
    return int((end - start).total_seconds() // 60)


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_day(text: str) -> dt.date:
    """A calendar day written YYYY-MM-DD, and only so (`fromisoformat` also takes `20240329`
    and `2024-W13-5`, which the CLI does not promise)."""
    value = text.strip()
    try:
        if not _DAY.fullmatch(value):
            raise ValueError(value)
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise PartitionError(f"{text!r} is not a date: use YYYY-MM-DD (e.g. 2024-01-15)") from None
    if day == dt.date.max:  # a day ends where the next begins: 9999-12-31 has no next
        raise PartitionError(f"{text!r} is after the last day there is a partition for")
    return day


def parse_day_range(text: str) -> DayRange:
    """'2024-01-15' is one day; '2024-01-01..2024-01-14' is a range, both ends included."""
    if ".." in text:
        first_text, last_text = text.split("..", 1)
        first, last = parse_day(first_text), parse_day(last_text)
        if last < first:
            raise PartitionError(f"range {text!r} ends before it starts")
    else:
        first = last = parse_day(text)
    return DayRange(first, last + dt.timedelta(days=1))


def today(tz: ZoneInfo) -> dt.date:
    return dt.datetime.now(tz).date()


def check_within(days: DayRange, first: dt.date, last: dt.date) -> None:
    if days.start < first or days.end - dt.timedelta(days=1) > last:
        raise PartitionError(
            f"partition {days.label()} is outside the partitions: valid days are "
            f"{first.isoformat()}..{last.isoformat()} "
            "(PHLO_PARTITION_START..today in PHLO_TIMEZONE)"
        )
