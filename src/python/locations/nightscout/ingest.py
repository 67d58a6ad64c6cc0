"""From Nightscout entries to validated rows of `raw.glucose_entries`, one local day at a time.

Kept: sensor glucose (`type = 'sgv'`). Dropped and counted: other entry types, Dexcom's
documented sensor error codes (ERROR_CODES), and duplicates (the same `_id` twice, or the
same `date` from a second uploader; the first `_id` in sort order wins, so reruns pick the same
row). Validated: by a Pandera schema; failing rows go to `raw.glucose_entries_rejected` with
their reasons. A day with more than NIGHTSCOUT_MAX_REJECTED_PCT percent rejected blocks the
run, and nothing is written; so does a day that would lose more than PHLO_MAX_SHRINK_PCT of the
readings it holds, unless forced.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pandera.pandas as pa

from phlo_core.calendar import DayRange, epoch_ms, utc_bounds
from phlo_core.ingestion import DayBatch, DayStats
from phlo_core.lakehouse.writes import PartitionWrite
from phlo_core.quality import split_by_schema, typed_frame

# Dexcom's special glucose values, as Nightscout's `errorcodes` plugin documents them (0 is
# NONE). Any other value below 39 (negative ones included) is not a reading but not a code
# either: validation rejects it, and it counts against NIGHTSCOUT_MAX_REJECTED_PCT.
ERROR_CODES = frozenset({0, 1, 2, 3, 5, 6, 9, 10, 12})
LOWEST_READING = 39
DIRECTIONS = [
    "NONE",
    "DoubleUp",
    "SingleUp",
    "FortyFiveUp",
    "Flat",
    "FortyFiveDown",
    "SingleDown",
    "DoubleDown",
    "NOT COMPUTABLE",
    "RATE OUT OF RANGE",
]
ENTRIES_TABLE = "raw.glucose_entries"
REJECTED_TABLE = "raw.glucose_entries_rejected"
ENTRY_COLUMNS = {
    "partition_date": "date",
    "entry_id": "varchar",
    "reading_at_ms": "bigint",
    "sgv": "integer",
    "direction": "varchar",
    "trend": "integer",
    "device": "varchar",
    "noise": "integer",
    "utc_offset_minutes": "integer",
    "date_string": "varchar",
}
REJECTED_COLUMNS = {
    "partition_date": "date",
    "entry_id": "varchar",
    "reading_at_ms": "bigint",
    "reason": "varchar",
    "payload": "varchar",
}


def entry_schema(start_ms: int, end_ms: int) -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {
            "entry_id": pa.Column(str, pa.Check.str_length(1, 64)),
            "reading_at_ms": pa.Column("int64", pa.Check.in_range(start_ms, end_ms - 1)),
            "sgv": pa.Column("Int64", pa.Check.in_range(LOWEST_READING, 600)),
            "direction": pa.Column(str, pa.Check.isin(DIRECTIONS), nullable=True),
            "trend": pa.Column("Int64", pa.Check.in_range(0, 9), nullable=True),
            "device": pa.Column(str, nullable=True),
            "noise": pa.Column("Int64", pa.Check.in_range(0, 9), nullable=True),
            "utc_offset_minutes": pa.Column("Int64", pa.Check.in_range(-720, 840), nullable=True),
            "date_string": pa.Column(str, nullable=True),
        },
        name="nightscout_glucose_entry",
        strict=False,
    )


@dataclass
class GlucoseDayStats(DayStats):
    fetched: int = 0
    other_types: int = 0
    error_codes: int = 0

    def source_counts(self) -> dict[str, object]:
        return {"fetched": self.fetched, "error codes": self.error_codes}


GlucoseBatch = DayBatch[GlucoseDayStats]


def _as_int(value: object) -> int | None:
    """Nightscout sends numbers as JSON numbers or strings; anything not whole is missing."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)  # pyright: ignore[reportArgumentType]
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number == int(number) else None


def _as_str(value: object) -> str | None:
    return None if value is None else str(value)


_NUMERIC_FIELDS = {
    "reading_at_ms": "date",
    "sgv": "sgv",
    "trend": "trend",
    "noise": "noise",
    "utc_offset_minutes": "utcOffset",
}


def _candidate(entry: dict[str, Any]) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "entry_id": _as_str(entry.get("_id")),
        "direction": _as_str(entry.get("direction")),
        "device": _as_str(entry.get("device")),
        "date_string": _as_str(entry.get("dateString")),
        "payload": json.dumps(entry, sort_keys=True, default=str),
    }
    problems = []
    for column, field_name in _NUMERIC_FIELDS.items():
        raw = entry.get(field_name)
        candidate[column] = _as_int(raw)
        if raw is not None and candidate[column] is None:
            problems.append(f"{column}: not a whole number (got {raw!r})")
    candidate["reason"] = "; ".join(problems) or None
    return candidate


def _local_day(epoch: int | None, days: DayRange, tz: ZoneInfo) -> dt.date:
    """The local day of a reading; readings outside the window are attributed to its nearest
    day, so that they are counted and then rejected by the schema rather than lost."""
    if epoch is None:
        return days.start
    try:
        day = dt.datetime.fromtimestamp(epoch / 1000, tz).date()
    except (OverflowError, OSError, ValueError):
        return days.start
    return min(max(day, days.start), days.end - dt.timedelta(days=1))


def prepare_batch(entries: list[dict[str, Any]], days: DayRange, tz: ZoneInfo) -> GlucoseBatch:
    start, end = utc_bounds(days, tz)
    stats = {day: GlucoseDayStats() for day in days.days()}
    candidates: list[dict[str, Any]] = []
    unparseable: list[dict[str, Any]] = []
    for entry in entries:
        candidate = _candidate(entry)
        day = _local_day(candidate["reading_at_ms"], days, tz)
        candidate["partition_date"] = day
        if entry.get("type") != "sgv":
            stats[day].other_types += 1
            continue
        stats[day].fetched += 1
        if candidate["sgv"] in ERROR_CODES:
            stats[day].error_codes += 1
            continue
        if candidate["reason"]:
            stats[day].rejected += 1
            unparseable.append(candidate)
            continue
        candidates.append(candidate)

    candidates.sort(
        key=lambda c: (c["reading_at_ms"] is None, c["reading_at_ms"] or 0, c["entry_id"] or "")
    )
    seen_ids: set[str | None] = set()
    seen_dates: set[int] = set()
    unique: list[dict[str, Any]] = []
    for candidate in candidates:
        reading_at = candidate["reading_at_ms"]
        if candidate["entry_id"] in seen_ids or reading_at in seen_dates:
            stats[candidate["partition_date"]].duplicates += 1
            continue
        seen_ids.add(candidate["entry_id"])
        if reading_at is not None:
            seen_dates.add(reading_at)
        unique.append(candidate)

    frame = typed_frame(unique, {**ENTRY_COLUMNS, "payload": "varchar"})
    split = split_by_schema(frame, entry_schema(epoch_ms(start), epoch_ms(end)))
    for day in split.rejected["partition_date"]:
        stats[day].rejected += 1
    for day in split.valid["partition_date"]:
        stats[day].loaded += 1
    rows = split.valid.loc[:, list(ENTRY_COLUMNS)].reset_index(drop=True)
    rejected = pd.concat(
        [typed_frame(unparseable, REJECTED_COLUMNS), split.rejected.loc[:, list(REJECTED_COLUMNS)]],
        ignore_index=True,
    )
    return DayBatch(days, rows, rejected, stats)


def batch_writes(batch: GlucoseBatch) -> list[PartitionWrite]:
    """The batch's days in both tables, entries first (the table a shrink is measured on)."""
    return [
        PartitionWrite.of_days(ENTRIES_TABLE, ENTRY_COLUMNS, batch.days, batch.rows),
        PartitionWrite.of_days(REJECTED_TABLE, REJECTED_COLUMNS, batch.days, batch.rejected),
    ]
