"""Partition writes against a real DuckLake catalog (SQLite) and Parquet files on disk."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pyarrow as pa
import pytest

from phlo_core.lakehouse import connect as connect_module
from phlo_core.lakehouse.connect import (
    IDENTITY_TABLE,
    LakehouseError,
    QueryError,
    lakehouse,
    lakehouse_created,
    query,
)
from phlo_core.lakehouse.writes import PartitionWrite, replace_partitions
from phlo_core.settings import PhloSettings

COLUMNS = {"day": "date", "value": "integer"}
D1, D2, D3 = dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 3)


def write(
    table: str, start: dt.date, end: dt.date, rows: list[tuple[dt.date, int]]
) -> PartitionWrite:
    data = pa.table({"day": [r[0] for r in rows], "value": [r[1] for r in rows]})
    return PartitionWrite(table, COLUMNS, "day", start, end, data)


def rows(settings: PhloSettings, table: str) -> list[tuple]:
    return query(f"select day, value from {table} order by day, value", settings).rows


def test_replacing_a_day_is_idempotent_and_leaves_other_days(
    make_settings: Callable[..., PhloSettings],
) -> None:
    settings = make_settings()
    replace_partitions([write("raw.t", D1, D3, [(D1, 1), (D2, 2)])], settings)
    replace_partitions([write("raw.t", D2, D3, [(D2, 20), (D2, 21)])], settings)
    replace_partitions([write("raw.t", D2, D3, [(D2, 20), (D2, 21)])], settings)
    assert rows(settings, "raw.t") == [(D1, 1), (D2, 20), (D2, 21)]


def test_a_failed_write_changes_no_table(make_settings: Callable[..., PhloSettings]) -> None:
    settings = make_settings()
    replace_partitions(
        [write("raw.a", D1, D2, [(D1, 1)]), write("raw.b", D1, D2, [(D1, 1)])], settings
    )
    broken = PartitionWrite(
        "raw.b", COLUMNS, "day", D1, D2, pa.table({"day": [D1], "value": ["not a number"]})
    )
    with pytest.raises(Exception, match="not a number"):
        replace_partitions([write("raw.a", D1, D2, [(D1, 99)]), broken], settings)
    assert rows(settings, "raw.a") == [(D1, 1)]
    assert rows(settings, "raw.b") == [(D1, 1)]


def test_an_empty_day_replaces_old_rows_with_none(
    make_settings: Callable[..., PhloSettings],
) -> None:
    settings = make_settings()
    replace_partitions([write("raw.t", D1, D2, [(D1, 1)])], settings)
    replace_partitions([write("raw.t", D1, D2, [])], settings)
    assert rows(settings, "raw.t") == []


def test_queries_are_read_only(make_settings: Callable[..., PhloSettings]) -> None:
    settings = make_settings()
    replace_partitions([write("raw.t", D1, D2, [(D1, 1)])], settings)
    with pytest.raises(QueryError, match="read-only"):
        query("drop table raw.t", settings)
    with pytest.raises(QueryError, match="nope"):
        query("select * from raw.nope", settings)
    assert rows(settings, "raw.t") == [(D1, 1)]


def test_querying_an_empty_lakehouse_says_so(make_settings: Callable[..., PhloSettings]) -> None:
    with pytest.raises(LakehouseError, match="empty"):
        query("select 1", make_settings())


def _write_days(home: str, first: int, count: int) -> None:
    from phlo_core.settings import load_settings

    settings = load_settings(phlo_home=home)
    for offset in range(first, first + count):
        day = D1 + dt.timedelta(days=offset)
        rows = [(day, offset * 100 + i) for i in range(3)]
        replace_partitions([write("raw.busy", day, day + dt.timedelta(days=1), rows)], settings)


def test_concurrent_writers_to_one_table_all_land(
    make_settings: Callable[..., PhloSettings],
) -> None:
    """Several processes replacing different days of one table through the SQLite catalog:
    commit conflicts and `database is locked` happen, and are retried until every write lands."""
    import multiprocessing

    settings = make_settings()
    replace_partitions([write("raw.busy", D1, D2, [])], settings)  # create the table first
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_write_days, args=(str(settings.home), n * 5, 5)) for n in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    counts = query("select count(*), count(distinct day) from raw.busy", settings).rows
    assert counts == [(60, 20)]


def _no_lakehouse(*args: object, **kwargs: object) -> None:
    raise AssertionError("the lakehouse was opened")


def test_a_lakehouse_made_before_the_birth_record_keeps_counting_its_days(
    make_settings: Callable[..., PhloSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upgrading users: a lakehouse that holds tables but no birth record (made by an older
    phlo) is dated to the epoch, so every day materialized into it still counts as done; a new
    one is dated now."""
    settings = make_settings()
    replace_partitions([write("raw.values", D1, D2, [(D1, 1)])], settings)
    born = lakehouse_created(settings)
    assert born is not None and abs(born - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    # Remembered (PHLO_HOME/cache): the next answer opens no DuckDB.
    assert (settings.home / "cache" / "lakehouse.json").exists()
    with monkeypatch.context() as patched:
        patched.setattr(connect_module, "lakehouse", _no_lakehouse)
        assert lakehouse_created(settings) == born

    with lakehouse(settings) as con:
        con.execute(f"drop table {IDENTITY_TABLE}")  # as an older phlo left it
    assert lakehouse_created(settings) == dt.datetime.fromtimestamp(0, dt.UTC)
    replace_partitions([write("raw.values", D2, D3, [(D2, 2)])], settings)  # records the epoch
    assert lakehouse_created(settings) == dt.datetime.fromtimestamp(0, dt.UTC)
    with monkeypatch.context() as patched:  # the new record, remembered in its turn
        patched.setattr(connect_module, "lakehouse", _no_lakehouse)
        assert lakehouse_created(settings) == dt.datetime.fromtimestamp(0, dt.UTC)
    assert query("select count(*) from raw.values", settings).rows == [(2,)]


def test_phlo_and_dbt_query_on_the_configured_duckdb_threads(
    make_settings: Callable[..., PhloSettings],
) -> None:
    """One thread by default for a lake on local files (many small queries: measured
    fastest), PHLO_DUCKDB_THREADS otherwise, for phlo's connections and dbt's alike; a lake in
    an object store keeps DuckDB's thread per core unless set."""
    from phlo_core.dbt.profile import profile_document

    for settings, threads in ((make_settings(), 1), (make_settings(phlo_duckdb_threads=3), 3)):
        for read_only in (False, True):
            with lakehouse(settings, read_only=read_only) as con:
                found = con.execute("select current_setting('threads')").fetchone()
            assert found == (threads,)
        dbt = profile_document(settings)["phlo"]["outputs"]["lake"]
        assert dbt["settings"]["threads"] == threads
    on_s3 = {
        "phlo_lake_data_path": "s3://lake/ducklake/",
        "phlo_s3_endpoint": "127.0.0.1:9",
        "phlo_s3_access_key_id": "key",
        "phlo_s3_secret_access_key": "secret",
    }
    assert make_settings(**on_s3).duckdb_threads is None  # DuckDB's default: one per core
    assert (
        "threads"
        not in profile_document(make_settings(**on_s3))["phlo"]["outputs"]["lake"]["settings"]
    )
    assert make_settings(phlo_duckdb_threads=2, **on_s3).duckdb_threads == 2
