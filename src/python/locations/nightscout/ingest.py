"""From Nightscout entries to validated rows of `raw.glucose_entries`, one local day at a time.

Kept: sensor glucose (`type = 'sgv'`). Dropped and counted: other entry types, sensor error
codes (sgv < 39), and duplicates (the same `_id` twice, or the same `date` from a second
uploader; the first `_id` in sort order wins, so reruns pick the same row). Validated: by a
Pandera schema; failing rows go to `raw.glucose_entries_rejected` with their reasons. A day with
more than NIGHTSCOUT_MAX_REJECTED_PCT percent rejected blocks the run, and nothing is written.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import pandas as pd
import pandera.pandas as pa
import pyarrow as pyarrow

from phlo_core.calendar import DayRange, epoch_ms, utc_bounds
from phlo_core.lakehouse import PartitionWrite, replace_partitions
from phlo_core.quality import split_by_schema
from phlo_core.settings import PhloSettings

ERROR_CODE_BELOW = 39
DIRECTIONS = [
    "NONE", "DoubleUp", "SingleUp", "FortyFiveUp", "Flat", "FortyFiveDown",
    "SingleDown", "DoubleDown", "NOT COMPUTABLE", "RATE OUT OF RANGE",
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
            "sgv": pa.Column("Int64", pa.Check.in_range(ERROR_CODE_BELOW, 600)),
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
class DayStats:
    fetched: int = 0
    other_types: int = 0
    error_codes: int = 0
    duplicates: int = 0
    rejected: int = 0
    loaded: int = 0

    @property
    def rejected_pct(self) -> float:
        candidates = self.rejected + self.loaded
        return 100.0 * self.rejected / candidates if candidates else 0.0


@dataclass
class GlucoseBatch:
    days: DayRange
    rows: pd.DataFrame
    rejected: pd.DataFrame
    stats: dict[dt.date, DayStats] = field(default_factory=dict)

    def days_over(self, max_rejected_pct: float) -> dict[dt.date, DayStats]:
        return {day: s for day, s in self.stats.items() if s.rejected_pct > max_rejected_pct}

    def totals(self) -> DayStats:
        total = DayStats()
        for s in self.stats.values():
            for name in vars(total):
                setattr(total, name, getattr(total, name) + getattr(s, name))
        return total


def _int_column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame:
        return pd.Series(pd.NA, index=frame.index, dtype="Int64")
    numbers = pd.to_numeric(frame[name], errors="coerce")
    whole = numbers.where(numbers.isna() | (numbers == numbers.round()))
    return whole.astype("Float64").astype("Int64")


def _str_column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame:
        return pd.Series(pd.NA, index=frame.index, dtype="str")
    return frame[name].map(lambda v: None if v is None or v != v else str(v)).astype("str")


def prepare_batch(entries: list[dict], days: DayRange, tz: ZoneInfo) -> GlucoseBatch:
    start, end = utc_bounds(days, tz)
    start_ms, end_ms = epoch_ms(start), epoch_ms(end)
    stats = {day: DayStats() for day in days.days()}
    empty_rows = pd.DataFrame({name: [] for name in ENTRY_COLUMNS})
    empty_rejected = pd.DataFrame({name: [] for name in REJECTED_COLUMNS})
    if not entries:
        return GlucoseBatch(days, empty_rows, empty_rejected, stats)

    raw = pd.DataFrame.from_records(entries)
    frame = pd.DataFrame(
        {
            "entry_id": _str_column(raw, "_id"),
            "entry_type": _str_column(raw, "type"),
            "reading_at_ms": _int_column(raw, "date"),
            "sgv": _int_column(raw, "sgv"),
            "direction": _str_column(raw, "direction"),
            "trend": _int_column(raw, "trend"),
            "device": _str_column(raw, "device"),
            "noise": _int_column(raw, "noise"),
            "utc_offset_minutes": _int_column(raw, "utcOffset"),
            "date_string": _str_column(raw, "dateString"),
        }
    )
    frame["payload"] = [json.dumps(e, sort_keys=True, default=str) for e in entries]
    local_dates = pd.to_datetime(frame["reading_at_ms"], unit="ms", utc=True).dt.tz_convert(tz)
    frame["partition_date"] = local_dates.dt.date
    # Entries the server returned outside the window are attributed to the nearest day so that
    # they are counted and rejected (by the schema's date check) rather than silently dropped.
    frame["partition_date"] = frame["partition_date"].map(
        lambda d: days.start if d is None or d != d or d < days.start
        else min(d, days.end - dt.timedelta(days=1))
    )

    def count(mask: pd.Series, attribute: str) -> None:
        for day, n in frame.loc[mask, "partition_date"].value_counts().items():
            setattr(stats[day], attribute, getattr(stats[day], attribute) + int(n))

    is_sgv = frame["entry_type"] == "sgv"
    count(is_sgv, "fetched")
    count(~is_sgv, "other_types")
    frame = frame[is_sgv]
    is_error_code = frame["sgv"].notna() & (frame["sgv"] < ERROR_CODE_BELOW)
    count(is_error_code, "error_codes")
    frame = frame[~is_error_code].sort_values(["reading_at_ms", "entry_id"], na_position="last")
    duplicate = frame["entry_id"].duplicated() | (
        frame["reading_at_ms"].notna() & frame["reading_at_ms"].duplicated()
    )
    count(duplicate, "duplicates")
    frame = frame[~duplicate].reset_index(drop=True)

    split = split_by_schema(frame, entry_schema(start_ms, end_ms))
    for attribute, part in (("rejected", split.rejected), ("loaded", split.valid)):
        for day, n in part["partition_date"].value_counts().items():
            setattr(stats[day], attribute, getattr(stats[day], attribute) + int(n))

    rows = split.valid[list(ENTRY_COLUMNS)].sort_values("reading_at_ms").reset_index(drop=True)
    rejected = split.rejected.assign(
        reading_at_ms=split.rejected["reading_at_ms"].astype("Int64")
    )[list(REJECTED_COLUMNS)]
    return GlucoseBatch(days, rows, rejected.reset_index(drop=True), stats)


def write_batch(batch: GlucoseBatch, settings: PhloSettings) -> dict[str, int]:
    """Replace the batch's days in both tables in one transaction."""

    def arrow(frame: pd.DataFrame) -> pyarrow.Table:
        return pyarrow.Table.from_pandas(frame, preserve_index=False)

    return replace_partitions(
        [
            PartitionWrite(
                ENTRIES_TABLE, ENTRY_COLUMNS, "partition_date",
                batch.days.start, batch.days.end, arrow(batch.rows),
            ),
            PartitionWrite(
                REJECTED_TABLE, REJECTED_COLUMNS, "partition_date",
                batch.days.start, batch.days.end, arrow(batch.rejected),
            ),
        ],
        settings,
    )
