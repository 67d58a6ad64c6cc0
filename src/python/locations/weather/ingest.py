"""From Open-Meteo's hourly series to validated rows of `raw.weather_observations`.

A local day (PHLO_TIMEZONE) holds exactly its own hours: 24, or 23 / 25 on daylight-saving
days. Hours outside the window (the request covers whole UTC days) are not used. Hours the
source has no value for at all (the archive's latest hours) are counted as missing, not loaded.
The same place and hour twice keeps the first. Values are validated by a Pandera schema; failing
hours (and values no column can hold: text, NaN, 1e30 where a whole number is due) go to
`raw.weather_observations_rejected` with their reasons, counted once, as rejected.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pandera.pandas as pa

from locations.weather.client import VARIABLES, Hour
from phlo_core.calendar import DayRange, utc_bounds
from phlo_core.ingestion import DayBatch, DayStats
from phlo_core.quality import split_by_schema, typed_frame

OBSERVATIONS_TABLE = "raw.weather_observations"
REJECTED_TABLE = "raw.weather_observations_rejected"
OBSERVATION_COLUMNS = {
    "partition_date": "date",
    "place": "varchar",
    "latitude": "double",
    "longitude": "double",
    "observed_at": "timestamptz",
    "temperature_2m": "double",
    "relative_humidity_2m": "integer",
    "precipitation": "double",
    "weather_code": "integer",
    "wind_speed_10m": "double",
    "pressure_msl": "double",
    "source": "varchar",
}
REJECTED_COLUMNS = {
    "partition_date": "date",
    "place": "varchar",
    "observed_at": "timestamptz",
    "reason": "varchar",
    "payload": "varchar",
}
# WMO weather interpretation codes, as Open-Meteo documents them.
WMO_CODES = [0, 1, 2, 3, 45, 48, 51, 53, 55, 56, 57, 61, 63, 65, 66, 67, 71, 73, 75, 77]
WMO_CODES += [80, 81, 82, 85, 86, 95, 96, 99]
_WHOLE = ("relative_humidity_2m", "weather_code")


def observation_schema() -> pa.DataFrameSchema:
    def number(low: float, high: float) -> pa.Column:
        return pa.Column("float64", pa.Check.in_range(low, high), nullable=True)

    return pa.DataFrameSchema(
        {
            "temperature_2m": number(-90, 60),
            "relative_humidity_2m": pa.Column("Int64", pa.Check.in_range(0, 100), nullable=True),
            "precipitation": number(0, 500),
            "weather_code": pa.Column("Int64", pa.Check.isin(WMO_CODES), nullable=True),
            "wind_speed_10m": number(0, 500),
            "pressure_msl": number(850, 1100),
        },
        name="open_meteo_hourly_observation",
        strict=False,
    )


@dataclass
class WeatherDayStats(DayStats):
    expected: int = 0  # hours in the local day x places
    missing: int = 0  # hours the source sent nothing for

    def source_counts(self) -> dict[str, object]:
        return {"expected hours": self.expected, "missing": self.missing}


WeatherBatch = DayBatch[WeatherDayStats]


# Whole numbers at or beyond this size fit no integer column (1e30 is whole, and out of range).
_WHOLE_LIMIT = 2**63


def _number(value: object, whole: bool) -> tuple[float | int | None, str | None]:
    """(value, problem): None is a missing value. Anything not a finite number (or not whole
    where a whole number is due) is not a number; a number no column can hold (1e30 where a
    whole number is due, an integer too long for a float) is out of range. Either rejects the
    hour, as an implausible value does: one odd value must not fail the whole run."""
    kind = "a whole number" if whole else "a number"
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, f"not {kind}"
    try:
        number = float(value)
    except OverflowError:
        return None, "out of range"
    if not math.isfinite(number):
        return None, f"not {kind}"
    if not whole:
        return number, None
    if not number.is_integer():
        return None, f"not {kind}"
    exact = int(value)  # an integer as sent, not its float
    return (exact, None) if -_WHOLE_LIMIT <= exact < _WHOLE_LIMIT else (None, "out of range")


def _candidate(hour: Hour, day: dt.date) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "partition_date": day,
        "place": hour.place.name,
        "latitude": hour.place.latitude,
        "longitude": hour.place.longitude,
        "observed_at": hour.observed_at,
        "source": hour.source,
        "payload": json.dumps(
            {"place": hour.place.name, "time": hour.observed_at.isoformat(), **hour.values},
            default=str,
        ),
    }
    problems = []
    for name in VARIABLES:
        raw = hour.values.get(name)
        candidate[name], problem = _number(raw, name in _WHOLE)
        if problem:
            problems.append(f"{name}: {problem} (got {str(raw)[:40]!r})")
    candidate["reason"] = "; ".join(problems) or None
    return candidate


def expected_hours(day: dt.date, tz: ZoneInfo) -> int:
    """The hours the source labels within the local day: UTC hour starts in [midnight, next
    midnight). 24, or 23 / 25 on daylight-saving days (also in zones with half-hour shifts)."""
    start, end = utc_bounds(DayRange(day, day + dt.timedelta(days=1)), tz)
    hour = 3600
    first = -(-int(start.timestamp()) // hour)  # ceil: the first hour start in the day
    after = -(-int(end.timestamp()) // hour)
    return after - first


def prepare_batch(
    hours: Iterable[Hour],
    days: DayRange,
    tz: ZoneInfo,
    places: int,
    now: dt.datetime | None = None,
) -> WeatherBatch:
    """Validated rows for the window. Hours from `now` on are not observations yet (the
    forecast API fills them with predictions): they are not loaded, and count as missing."""
    start, end = utc_bounds(days, tz)
    end_observed = min(end, now) if now is not None else end
    stats = {day: WeatherDayStats(expected=expected_hours(day, tz) * places) for day in days.days()}
    seen: set[tuple[str, dt.datetime]] = set()
    candidates: list[dict[str, Any]] = []
    unparseable: list[dict[str, Any]] = []
    for hour in hours:
        if not start <= hour.observed_at < end_observed:
            continue
        if all(hour.values.get(name) is None for name in VARIABLES):
            continue  # the source has nothing for this hour yet: counted as missing below
        day = hour.observed_at.astimezone(tz).date()
        key = (hour.place.name, hour.observed_at)
        if key in seen:
            stats[day].duplicates += 1
            continue
        seen.add(key)
        candidate = _candidate(hour, day)
        if candidate["reason"]:
            stats[day].rejected += 1
            unparseable.append(candidate)
        else:
            candidates.append(candidate)
    frame = typed_frame(candidates, {**OBSERVATION_COLUMNS, "payload": "varchar"})
    split = split_by_schema(frame, observation_schema())
    for day in split.rejected["partition_date"]:
        stats[day].rejected += 1
    for day in split.valid["partition_date"]:
        stats[day].loaded += 1
    # Complete means a temperature for every hour, as `hours_observed` counts in dbt. A rejected
    # hour was sent: it counts once, as rejected, never also as missing (not available yet).
    valid = split.valid
    observed = Counter(valid.loc[valid["temperature_2m"].notna(), "partition_date"])
    for day, s in stats.items():
        s.missing = max(0, s.expected - observed[day] - s.rejected)
    rows = split.valid.loc[:, list(OBSERVATION_COLUMNS)].reset_index(drop=True)
    rejected = pd.concat(
        [typed_frame(unparseable, REJECTED_COLUMNS), split.rejected.loc[:, list(REJECTED_COLUMNS)]],
        ignore_index=True,
    )
    return DayBatch(days, rows, rejected, stats)
