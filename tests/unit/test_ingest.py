from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest

from locations.nightscout.ingest import prepare_batch
from phlo_core.calendar import DayRange, epoch_ms, utc_bounds
from phlo_core.lakehouse.connect import query
from phlo_core.lakehouse.writes import PartitionWrite, replace_partitions
from phlo_core.settings import PhloSettings

UTC = ZoneInfo("UTC")
DAY = DayRange(dt.date(2024, 1, 15), dt.date(2024, 1, 16))
START_MS = epoch_ms(utc_bounds(DAY, UTC)[0])


def entry(minute: int, sgv: object = 120, **extra: object) -> dict:
    return {
        "_id": f"id{minute:04d}",
        "type": "sgv",
        "sgv": sgv,
        "date": START_MS + minute * 60_000,
        "direction": "Flat",
        "device": "share2",
        **extra,
    }


def test_keeps_sensor_glucose_and_drops_what_is_not_a_reading() -> None:
    entries = [
        entry(0),
        entry(5, sgv=10),  # sensor error code
        entry(10, sgv=12),  # sensor error code
        entry(15, type="mbg", mbg=130, sgv=None),
        entry(20),
        {**entry(20), "_id": "second-uploader"},  # same date, other uploader
        entry(25),
        entry(25),  # same _id twice
    ]
    batch = prepare_batch(entries, DAY, UTC)
    stats = batch.stats[DAY.start]
    assert list(batch.rows["entry_id"]) == ["id0000", "id0020", "id0025"]
    assert (stats.fetched, stats.error_codes, stats.other_types, stats.duplicates) == (7, 2, 1, 2)
    assert stats.loaded == 3
    assert stats.rejected == 0


def test_the_same_row_wins_a_duplicate_whatever_the_order_served() -> None:
    a, b = {**entry(20), "_id": "aaa"}, {**entry(20), "_id": "bbb", "device": "xdrip"}
    first = prepare_batch([a, b], DAY, UTC).rows
    second = prepare_batch([b, a], DAY, UTC).rows
    assert list(first["entry_id"]) == list(second["entry_id"]) == ["aaa"]


def test_invalid_rows_are_rejected_with_their_reason() -> None:
    entries = [
        entry(0),
        entry(5, sgv="HIGH"),
        entry(10, direction="Sideways"),
        entry(15, sgv=900),
        {**entry(20), "date": START_MS - 1},  # the day before: outside the window asked for
    ]
    batch = prepare_batch(entries, DAY, UTC)
    assert list(batch.rows["entry_id"]) == ["id0000"]
    reasons = dict(zip(batch.rejected["entry_id"], batch.rejected["reason"], strict=True))
    assert set(reasons) == {"id0005", "id0010", "id0015", "id0020"}
    assert reasons["id0005"] == "sgv: not a whole number (got 'HIGH')"
    assert reasons["id0010"].startswith("direction: isin")
    assert reasons["id0015"].startswith("sgv: in_range")
    assert reasons["id0020"].startswith("reading_at_ms: in_range")
    assert '"sgv": "HIGH"' in batch.rejected.set_index("entry_id").loc["id0005", "payload"]
    assert batch.stats[DAY.start].rejected_pct == 80.0


def test_a_day_without_entries_gives_an_empty_batch() -> None:
    batch = prepare_batch([], DAY, UTC)
    assert batch.rows.empty
    assert batch.rejected.empty
    assert batch.stats[DAY.start].rejected_pct == 0.0


def test_impossible_values_are_rejected_not_counted_as_error_codes() -> None:
    entries = [entry(m, sgv=-40 - m) for m in range(0, 60, 5)] + [entry(60, sgv=38)]
    batch = prepare_batch(entries, DAY, UTC)
    stats = batch.stats[DAY.start]
    assert (stats.error_codes, stats.rejected, stats.loaded) == (0, 13, 0)
    assert stats.rejected_pct == 100.0
    assert all("sgv" in reason for reason in batch.rejected["reason"])


def _keyed(rows: list[tuple[dt.date, str, int]], places: list[str]) -> PartitionWrite:
    columns = {"day": "date", "place": "varchar", "value": "integer"}
    data = pa.table({name: [row[i] for row in rows] for i, name in enumerate(columns)})
    day = DAY.start
    keys = {"place": places} if places else {}
    return PartitionWrite("raw.hours", columns, "day", day, day + dt.timedelta(days=1), data, keys)


def test_a_write_replaces_the_keys_it_fetched_and_no_row_outside_them(
    make_settings: Callable[..., PhloSettings],
) -> None:
    """A run that fetched place a replaces a's rows of its days, never b's; a row it did not
    fetch (place c) would be duplicated by the next run of those days, so it is refused whole."""
    settings = make_settings()
    day = DAY.start

    def stored() -> list[tuple[object, ...]]:
        return query("select * from raw.hours order by all", settings).rows

    replace_partitions([_keyed([(day, "a", 1), (day, "b", 2)], ["a", "b"])], settings)
    replace_partitions([_keyed([(day, "a", 10)], ["a"])], settings)
    assert stored() == [(day, "a", 10), (day, "b", 2)]
    with pytest.raises(ValueError, match=r"raw.hours \(place a\): 1 row\(s\) to write lie outside"):
        replace_partitions([_keyed([(day, "a", 11), (day, "c", 3)], ["a"])], settings)
    assert stored() == [(day, "a", 10), (day, "b", 2)]
    replace_partitions([_keyed([(day, "c", 3)], [])], settings)  # no keys: the whole day
    assert stored() == [(day, "c", 3)]
