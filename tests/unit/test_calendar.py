from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from phlo_core.calendar import (
    DayRange,
    PartitionError,
    check_within,
    minutes_in_day,
    parse_day_range,
    utc_bounds,
)

NEW_YORK = ZoneInfo("America/New_York")


def test_daylight_saving_days_have_23_and_25_hours() -> None:
    assert minutes_in_day(dt.date(2024, 3, 10), NEW_YORK) == 23 * 60
    assert minutes_in_day(dt.date(2024, 11, 3), NEW_YORK) == 25 * 60
    assert minutes_in_day(dt.date(2024, 7, 1), NEW_YORK) == 24 * 60


def test_a_local_day_maps_to_its_utc_instants() -> None:
    start, end = utc_bounds(DayRange(dt.date(2024, 1, 15), dt.date(2024, 1, 16)), NEW_YORK)
    assert start == dt.datetime(2024, 1, 15, 5, tzinfo=dt.UTC)
    assert end == dt.datetime(2024, 1, 16, 5, tzinfo=dt.UTC)


def test_ranges_include_both_ends() -> None:
    days = parse_day_range("2024-01-01..2024-01-03")
    assert list(days.days()) == [dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 3)]
    assert days.label() == "2024-01-01..2024-01-03"
    assert parse_day_range("2024-01-05").label() == "2024-01-05"


@pytest.mark.parametrize(
    "text",
    ["2024-13-01", "yesterday", "2024-01-05..2024-01-01", "", "20240329", "2024-W13-5", "2024-1-5"],
)
def test_malformed_partitions_are_rejected(text: str) -> None:
    with pytest.raises(PartitionError):
        parse_day_range(text)


def test_days_outside_the_partitions_say_what_is_valid() -> None:
    with pytest.raises(PartitionError, match=r"2024-01-01\.\.2024-06-30"):
        check_within(parse_day_range("2023-12-31"), dt.date(2024, 1, 1), dt.date(2024, 6, 30))
    check_within(parse_day_range("2024-06-30"), dt.date(2024, 1, 1), dt.date(2024, 6, 30))
