"""The glucose pipeline end to end: real HTTP, real Dagster runs, real dbt, real DuckLake."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from locations.nightscout.sample_data import entries_between
from locations.nightscout.sample_server import EntrySource, SampleNightscoutServer
from phlo_core.calendar import DayRange, parse_day_range
from phlo_core.lakehouse.connect import query
from phlo_core.runs.engine import RunOutcome, materialize
from phlo_core.settings import PhloSettings
from tests.conftest import TEST_SECRET
from tests.e2e.helpers import (
    expected_daily_metrics,
    expected_hourly_profile,
    served_readings,
    snapshot,
)

# Around the spring daylight-saving change in New York: 2024-03-10 has 23 hours.
DAYS = parse_day_range("2024-03-09..2024-03-11")
EVERYTHING = "dlt_glucose_entries+"


@pytest.fixture(scope="module")
def server() -> Iterator[SampleNightscoutServer]:
    with SampleNightscoutServer(timezone="America/New_York", api_secret=TEST_SECRET) as s:
        yield s


@pytest.fixture
def pipeline_settings(
    make_settings: Callable[..., PhloSettings], server: SampleNightscoutServer
) -> Callable[..., PhloSettings]:
    def make(home: str = "phlo", **overrides: object) -> PhloSettings:
        values = {
            "phlo_timezone": "America/New_York",
            "nightscout_url": server.url,
            "nightscout_api_secret": TEST_SECRET,
            **overrides,
        }
        return make_settings(home, **values)

    return make


def run(selection: str, days: DayRange, settings: PhloSettings) -> None:
    outcomes = materialize(selection, days, settings)
    assert outcomes and all(o.success for o in outcomes), [o.errors for o in outcomes]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, server: SampleNightscoutServer) -> PhloSettings:
    """Three days built in one range run: the clean build the other tests compare against."""
    from phlo_core.settings import load_settings

    settings = load_settings(
        phlo_home=tmp_path_factory.mktemp("clean") / "phlo",
        phlo_timezone="America/New_York",
        nightscout_url=server.url,
        nightscout_api_secret=TEST_SECRET,
    )
    run(EVERYTHING, DAYS, settings)
    return settings


def test_rows_per_layer(built: PhloSettings) -> None:
    counts = {
        table: query(f"select count(*) from {table}", built).rows[0][0]
        for table in (
            "raw.glucose_entries",
            "bronze.stg_glucose_entries",
            "silver.fct_glucose_readings",
            "gold.mrt_glucose_readings",
            "silver.fct_daily_glucose_metrics",
        )
    }
    raw = counts["raw.glucose_entries"]
    assert 700 < raw < 864
    assert counts == {
        "raw.glucose_entries": raw,
        "bronze.stg_glucose_entries": raw,
        "silver.fct_glucose_readings": raw,
        "gold.mrt_glucose_readings": raw,
        "silver.fct_daily_glucose_metrics": 3,
    }
    hours = query(
        "select count(*), min(hour_of_day), max(hour_of_day) "
        "from marts.mrt_glucose_hourly_patterns",
        built,
    )
    assert hours.rows == [(24, 0, 23)]
    assert query("select count(*) from marts.mrt_glucose_overview", built).rows == [(3,)]
    parquet = list(Path(built.lake_data_path).rglob("raw/glucose_entries/*.parquet"))
    assert parquet, "raw entries are stored as Parquet files"


def test_daily_metrics_match_an_independent_computation(
    built: PhloSettings, server: SampleNightscoutServer
) -> None:
    secret_sha1 = hashlib.sha1(TEST_SECRET.encode()).hexdigest()
    result = query("select * from silver.fct_daily_glucose_metrics order by reading_date", built)
    rows = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
    assert [r["reading_date"] for r in rows] == list(DAYS.days())
    for row in rows:
        day = row["reading_date"]
        values = list(served_readings(server.url, secret_sha1, day, built.timezone).values())
        expected = expected_daily_metrics(values, day, built.timezone)
        for name, value in expected.items():
            if value is None:
                assert row[name] is None, name
            else:
                assert row[name] == pytest.approx(value, abs=0.006), (day, name)
    short_day = next(r for r in rows if r["reading_date"] == dt.date(2024, 3, 10))
    assert short_day["expected_reading_count"] == 276


def test_hourly_profile_matches_an_independent_computation(
    built: PhloSettings, server: SampleNightscoutServer
) -> None:
    secret_sha1 = hashlib.sha1(TEST_SECRET.encode()).hexdigest()
    readings: dict[int, int] = {}
    for day in DAYS.days():  # the latest 14 days of data are these 3
        readings |= served_readings(server.url, secret_sha1, day, built.timezone)
    expected = expected_hourly_profile(readings, built.timezone)
    result = query("select * from marts.mrt_glucose_hourly_patterns order by hour_of_day", built)
    rows = {
        row[result.columns.index("hour_of_day")]: dict(zip(result.columns, row, strict=True))
        for row in result.rows
    }
    assert set(rows) == set(expected) == set(range(24))
    for hour, want in expected.items():
        got = rows[hour]
        assert got["window_start"] == dt.date(2024, 2, 27)
        assert got["window_end"] == dt.date(2024, 3, 11)
        assert got["reading_count"] == want["reading_count"]
        for name, value in want.items():
            assert got[name] == pytest.approx(value, abs=0.051), (hour, name)


def test_rematerializing_a_day_keeps_one_row_per_reading(
    pipeline_settings: Callable[..., PhloSettings],
) -> None:
    settings = pipeline_settings()
    day = parse_day_range("2024-03-10")
    run(EVERYTHING, day, settings)
    first = snapshot(settings)
    # dbt keeps its debug log only with PHLO_DEBUG (writing it costs a run about 0.4 s).
    dbt_log = settings.dbt_dir / "target" / "nightscout" / "logs" / "dbt.log"
    assert not dbt_log.exists()
    debugging = pipeline_settings(phlo_debug=True)
    run(EVERYTHING, day, debugging)
    assert snapshot(settings) == first
    # dbt found the layers' schemas (it would create each again at every build otherwise).
    with dbt_log.open("rb") as log:
        second = log.read().decode()
    assert "Running with dbt" in second and "create schema" not in second
    duplicates = query(
        "select count(*) - count(distinct entry_id) from silver.fct_glucose_readings", settings
    )
    assert duplicates.rows == [(0,)]


@pytest.mark.slow
def test_days_in_any_order_equal_a_clean_build(
    built: PhloSettings, pipeline_settings: Callable[..., PhloSettings]
) -> None:
    settings = pipeline_settings()
    for days in ("2024-03-11", "2024-03-09..2024-03-10", "2024-03-10"):
        run(EVERYTHING, parse_day_range(days), settings)
    assert snapshot(settings) == snapshot(built)


def test_a_failed_source_leaves_the_previous_content(
    built: PhloSettings, pipeline_settings: Callable[..., PhloSettings]
) -> None:
    down = pipeline_settings(
        phlo_lake_catalog=built.lake_catalog,
        phlo_lake_data_path=built.lake_data_path,
        nightscout_url="http://127.0.0.1:9",
    )
    before = snapshot(built)
    outcomes = materialize(EVERYTHING, parse_day_range("2024-03-10"), down)
    assert not outcomes[0].success
    assert any("Nightscout unavailable" in e for e in outcomes[0].errors)
    assert snapshot(built) == before


def materialize_from(
    entries: EntrySource, built: PhloSettings, pipeline_settings: Callable[..., PhloSettings]
) -> tuple[list[RunOutcome], dict[str, list[tuple]]]:
    """2024-03-10 materialized into the clean build's lakehouse from a source serving `entries`:
    the outcomes, and the lakehouse as it was before."""
    with SampleNightscoutServer(timezone="America/New_York", entries=entries) as source:
        settings = pipeline_settings(
            phlo_lake_catalog=built.lake_catalog,
            phlo_lake_data_path=built.lake_data_path,
            nightscout_url=source.url,
            nightscout_api_secret=None,
        )
        before = snapshot(built)
        return materialize(EVERYTHING, parse_day_range("2024-03-10"), settings), before


def test_validation_blocks_a_bad_day_and_writes_nothing(
    built: PhloSettings, pipeline_settings: Callable[..., PhloSettings]
) -> None:
    tz = built.timezone

    def corrupted(lo: int, hi: int):
        for i, entry in enumerate(entries_between(lo, hi, tz)):
            yield {**entry, "direction": "Sideways"} if i % 10 == 0 else entry

    outcomes, before = materialize_from(corrupted, built, pipeline_settings)
    assert not outcomes[0].success
    assert "dlt_glucose_entries:rejected_rows_within_limit" in outcomes[0].failed_checks
    assert any("rejected more than 5%" in e for e in outcomes[0].errors)
    assert snapshot(built) == before


def test_impossible_values_are_rejected_not_dropped_as_error_codes(
    built: PhloSettings, pipeline_settings: Callable[..., PhloSettings]
) -> None:
    """A day whose readings all come back negative is not 'a day of sensor error codes': it is
    rejected, the run fails, and the stored readings stay."""
    tz = built.timezone

    def negative(lo: int, hi: int):
        for entry in entries_between(lo, hi, tz):
            yield {**entry, "sgv": -entry["sgv"]} if entry["type"] == "sgv" else entry

    outcomes, before = materialize_from(negative, built, pipeline_settings)
    assert not outcomes[0].success
    assert "dlt_glucose_entries:rejected_rows_within_limit" in outcomes[0].failed_checks
    assert snapshot(built) == before


def test_a_source_that_answers_empty_does_not_replace_a_stored_day(
    built: PhloSettings, pipeline_settings: Callable[..., PhloSettings]
) -> None:
    outcomes, before = materialize_from(lambda lo, hi: iter(()), built, pipeline_settings)
    assert not outcomes[0].success
    assert "dlt_glucose_entries:no_unexpected_shrink" in outcomes[0].failed_checks
    held = query(
        "select count(*) from raw.glucose_entries where partition_date = '2024-03-10'", built
    ).rows[0][0]
    [error] = outcomes[0].errors
    assert f"2024-03-10 held {held} rows and would keep 0" in error
    assert "--allow-shrink" in error
    assert snapshot(built) == before


@pytest.mark.slow  # keeps `make test` under 15 minutes; CI runs it
def test_a_forced_shrink_replaces_the_day(
    pipeline_settings: Callable[..., PhloSettings], server: SampleNightscoutServer
) -> None:
    day = parse_day_range("2024-03-11")
    run(EVERYTHING, day, pipeline_settings())
    tz = pipeline_settings().timezone

    def pruned(lo: int, hi: int):  # the site kept only the first hour of the day
        yield from entries_between(lo, min(hi, lo + 3_600_000), tz)

    with SampleNightscoutServer(timezone="America/New_York", entries=pruned) as site:
        settings = pipeline_settings(nightscout_url=site.url, nightscout_api_secret=None)
        blocked = materialize(EVERYTHING, day, settings)
        assert not blocked[0].success
        forced = materialize(EVERYTHING, day, settings, allow_shrink=True)
    assert forced[0].success, forced[0].errors
    daily = query("select reading_count from silver.fct_daily_glucose_metrics", settings).rows
    assert daily == [(12,)]


def test_an_implausible_volume_loads_with_a_warning(
    pipeline_settings: Callable[..., PhloSettings],
) -> None:
    tz = pipeline_settings().timezone

    def every_minute(lo: int, hi: int):  # a 1-minute sensor while the setting says 5
        from locations.nightscout.sample_data import _entry, glucose_at

        for ms in range(lo - lo % 60_000 + 60_000, hi, 60_000):
            yield _entry(ms, tz, "libre3", glucose_at(ms, tz))

    with SampleNightscoutServer(timezone="America/New_York", entries=every_minute) as site:
        settings = pipeline_settings(nightscout_url=site.url, nightscout_api_secret=None)
        outcomes = materialize(EVERYTHING, parse_day_range("2024-03-11"), settings)
    assert outcomes[0].success, outcomes[0].errors
    assert outcomes[0].failed_checks == ["dlt_glucose_entries:readings_per_day_plausible"]
    summary = outcomes[0].summaries["dlt_glucose_entries"]
    assert "IMPLAUSIBLE volume (2024-03-11: 1439 readings, 288 expected)" in summary


def test_a_few_bad_rows_are_kept_aside_and_the_day_loads(
    pipeline_settings: Callable[..., PhloSettings],
) -> None:
    tz = pipeline_settings().timezone

    def slightly_corrupted(lo: int, hi: int):
        for i, entry in enumerate(entries_between(lo, hi, tz)):
            yield {**entry, "sgv": "HIGH"} if i % 50 == 7 else entry

    with SampleNightscoutServer(timezone="America/New_York", entries=slightly_corrupted) as bad:
        settings = pipeline_settings(nightscout_url=bad.url, nightscout_api_secret=None)
        run(EVERYTHING, parse_day_range("2024-03-11"), settings)
    rejected = query(
        "select partition_date, reason, payload from raw.glucose_entries_rejected", settings
    ).rows
    assert 3 <= len(rejected) <= 7
    assert {r[0] for r in rejected} == {dt.date(2024, 3, 11)}
    assert {r[1] for r in rejected} == {"sgv: not a whole number (got 'HIGH')"}
    assert all('"sgv": "HIGH"' in r[2] for r in rejected)
    loaded = query("select count(*) from silver.fct_glucose_readings", settings).rows[0][0]
    daily = query("select reading_count from silver.fct_daily_glucose_metrics", settings).rows
    assert daily == [(loaded,)]


def test_a_failing_dbt_test_fails_its_check_and_stops_downstream(
    pipeline_settings: Callable[..., PhloSettings],
) -> None:
    """Bad rows that reach the raw table some other way are caught by the dbt tests, which run
    as Dagster asset checks: the check fails, the run fails, downstream models are not built."""
    import pyarrow as pa

    from locations.nightscout.ingest import ENTRIES_TABLE, ENTRY_COLUMNS
    from phlo_core.lakehouse.writes import PartitionWrite, replace_partitions

    settings = pipeline_settings()
    day = parse_day_range("2024-03-11")
    implausible = pa.table(
        {
            "partition_date": [day.start],
            "entry_id": ["implausible-1"],
            "reading_at_ms": [1_710_158_400_000],  # 2024-03-11 08:00 in New York
            "sgv": [900],
            "direction": ["Flat"],
            "trend": [4],
            "device": ["manual"],
            "noise": [1],
            "utc_offset_minutes": [-240],
            "date_string": ["2024-03-11T12:00:00.000Z"],
        }
    )
    replace_partitions(
        [
            PartitionWrite(
                ENTRIES_TABLE, ENTRY_COLUMNS, "partition_date", day.start, day.end, implausible
            )
        ],
        settings,
    )
    outcomes = materialize("stg_glucose_entries+", day, settings)
    assert not outcomes[0].success
    failed = outcomes[0].failed_checks
    assert any(c.startswith("stg_glucose_entries:phlo_shared_accepted_range") for c in failed)
    assert any("dbt build failed: test phlo_shared_accepted_range" in e for e in outcomes[0].errors)
    # ... and the one-line error shows the rows the test found, so the day at fault is named.
    assert any(
        "reading_date=2024-03-11" in e and "glucose_mg_dl=900" in e for e in outcomes[0].errors
    )
    tables = query(
        "select table_name from information_schema.tables where table_schema = 'silver'", settings
    ).rows
    assert tables == []


@pytest.mark.slow  # keeps `make test` under 15 minutes; CI runs it
def test_a_home_moved_elsewhere_keeps_working(
    pipeline_settings: Callable[..., PhloSettings], tmp_path: Path
) -> None:
    run(EVERYTHING, parse_day_range("2024-03-09"), pipeline_settings("before"))
    (tmp_path / "before").rename(tmp_path / "after")
    moved = pipeline_settings("after")
    assert query("select count(*) from silver.fct_daily_glucose_metrics", moved).rows == [(1,)]
    run(EVERYTHING, parse_day_range("2024-03-10"), moved)
    days = query("select reading_date from silver.fct_daily_glucose_metrics order by 1", moved)
    assert days.rows == [(dt.date(2024, 3, 9),), (dt.date(2024, 3, 10),)]
    assert list(Path(moved.lake_data_path).rglob("*.parquet"))


def test_a_run_launched_outside_phlo_is_tagged_with_its_process(
    pipeline_settings: Callable[..., PhloSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a run from the UI or a schedule: Dagster's own execution, without phlo's tags, its
    resources serving the settings of the process's environment (as a code server's). Its
    first asset tags it with its process, so that a kill of that process is noticed."""
    import os

    from dagster import AssetKey

    from phlo_core.backfill.workers import worker_environment
    from phlo_core.runs.instance import instance_for
    from phlo_core.runs.orphans import PID_TAG
    from phlo_core.settings import use_settings
    from phlo_core.workspace import load_definitions, location_ref

    settings = pipeline_settings()
    for name, value in worker_environment(settings).items():
        monkeypatch.setenv(name, value)
    use_settings(None)
    ref = location_ref(settings, "nightscout")
    job = load_definitions(ref, settings).resolve_implicit_global_asset_job_def()
    instance = instance_for(settings)
    result = job.execute_in_process(
        instance=instance,
        partition_key="2024-03-11",
        asset_selection=[AssetKey("dlt_glucose_entries")],
    )
    use_settings(None)
    assert result.success
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.tags[PID_TAG] == str(os.getpid())
    day = "select count(*) from raw.glucose_entries where partition_date = '2024-03-11'"
    assert query(day, settings).rows[0][0] > 0  # in the environment's lakehouse
