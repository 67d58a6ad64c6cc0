"""`phlo query` is a sandbox: hostile SQL is refused and changes nothing; limits hold."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from phlo_core.lakehouse.connect import QueryError, query
from phlo_core.lakehouse.sandbox import QueryLimitError, QueryRefusedError, run_query
from phlo_core.lakehouse.writes import PartitionWrite, replace_partitions
from phlo_core.settings import PhloSettings, load_settings, with_overrides

DAY = dt.date(2024, 1, 15)
PHLO = str(Path(sys.executable).with_name("phlo"))


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> PhloSettings:
    settings = load_settings(phlo_home=tmp_path_factory.mktemp("sandbox") / "phlo")
    rows = pa.table({"day": [DAY] * 3, "value": [1, 2, 3]})
    write = PartitionWrite(
        "raw.readings", {"day": "date", "value": "integer"}, "day", DAY, DAY.replace(day=16), rows
    )
    replace_partitions([write], settings)
    return settings


def files_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))  # folders too: a refused CREATE must not leave one


def test_reading_statements_run(lake: PhloSettings) -> None:
    assert run_query("select sum(value) from raw.readings", lake).rows == [(6,)]
    assert run_query("-- a report\nselect count(*) as n from raw.readings", lake).rows == [(3,)]
    tables = run_query("show all tables", lake)
    assert ("lake", "raw", "readings") in {row[:3] for row in tables.rows}
    snapshots = run_query("select count(*) from ducklake_snapshots('lake')", lake).rows
    assert snapshots[0][0] >= 1


@pytest.mark.parametrize(
    "sql",
    [
        "delete from raw.readings",
        "drop table raw.readings",
        "insert into raw.readings values (date '2024-01-15', 4)",
        "create table raw.other (a int)",
        "attach 'ducklake:sqlite:{catalog}' as rw (data_path '{data}')",
        "attach '{catalog}' as cat (type sqlite)",
        "detach lake",
        "copy raw.readings to '{data}/copied.csv'",
        "export database '{home}/exported'",
        "install '{home}/x.duckdb_extension'",
        "load sqlite_scanner",
        "set threads = 1",
        "reset memory_limit",
        "call ducklake_expire_snapshots('lake', older_than => now())",
        "select 1; delete from raw.readings",
        "select * from sqlite_scan('{catalog}', 'ducklake_snapshot')",
        "select * from read_csv('/etc/passwd')",
        "select * from read_text('/etc/hostname')",
        "select * from '/etc/passwd'",
        "select * from query('select 1')",
        "pragma database_list",
    ],
)
def test_hostile_statements_are_refused_and_change_nothing(lake: PhloSettings, sql: str) -> None:
    catalog = lake.lake_catalog.removeprefix("sqlite:")
    before = files_under(lake.home)
    statement = sql.format(catalog=catalog, data=lake.lake_data_path, home=lake.home)
    with pytest.raises(QueryRefusedError) as error:
        run_query(statement, lake)
    assert "\n" not in str(error.value)
    assert "not allowed" in str(error.value) or "statements given" in str(error.value)
    assert query("select count(*) from raw.readings", lake).rows == [(3,)]
    assert files_under(lake.home) == before


def test_the_lakes_own_files_can_be_read_by_path(lake: PhloSettings) -> None:
    rows = pa.table({"day": [DAY] * 5000, "value": list(range(5000))})
    columns = {"day": "date", "value": "integer"}
    write = PartitionWrite("raw.many", columns, "day", DAY, DAY.replace(day=16), rows)
    replace_partitions([write], lake)  # enough rows for a Parquet file (few are inlined)
    listing = "select data_file from ducklake_list_files('lake', 'many', schema => 'raw')"
    [(path,)] = run_query(listing, lake).rows
    assert run_query(f"select count(*) from read_parquet('{path}')", lake).rows == [(5000,)]


def test_a_syntax_error_is_a_query_error(lake: PhloSettings) -> None:
    with pytest.raises(QueryError, match="syntax error"):
        run_query("selec 1", lake)


def test_a_query_that_outgrows_the_memory_limit_is_stopped(lake: PhloSettings) -> None:
    limited = with_overrides(lake, phlo_query_memory_limit_mb=600)
    bomb = " union all ".join(f"select {i} as a" for i in range(20_000))
    with pytest.raises(QueryLimitError, match="PHLO_QUERY_MEMORY_LIMIT_MB"):
        run_query(bomb, limited)


def test_a_query_that_runs_too_long_is_stopped(lake: PhloSettings) -> None:
    limited = with_overrides(lake, phlo_query_timeout_seconds=1.5)
    with pytest.raises(QueryLimitError, match="PHLO_QUERY_TIMEOUT_SECONDS"):
        run_query("select count(*) from range(100000000000)", limited)


def test_the_cli_reads_sql_from_a_file_or_stdin_and_refuses_with_exit_2(
    lake: PhloSettings, tmp_path: Path
) -> None:
    env = {**os.environ, "PHLO_HOME": str(lake.home)}
    report = tmp_path / "report.sql"
    report.write_text("-- how many readings\nselect count(*) as n from raw.readings\n")

    def phlo(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PHLO, "query", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )

    assert phlo("-f", str(report), "--format", "csv").stdout.split() == ["n", "3"]
    assert phlo("-", "--format", "csv", stdin=report.read_text()).stdout.split() == ["n", "3"]
    assert phlo(report.read_text(), "--format", "csv").stdout.split() == ["n", "3"]
    refused = phlo("delete from raw.readings")
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0
    assert "DELETE is not allowed" in refused.stderr
    assert query("select count(*) from raw.readings", lake).rows == [(3,)]


@pytest.mark.parametrize(
    "sql",
    [
        "select * from __ducklake_metadata_lake.ducklake_metadata",
        "select * from __ducklake_metadata_lake.main.ducklake_data_file",
        "select * from pg_settings",
        "select * from duckdb_databases()",
        "select * from pg_catalog.pg_database",
    ],
)
def test_the_catalogs_own_tables_and_settings_views_are_refused(
    lake: PhloSettings, sql: str
) -> None:
    with pytest.raises(QueryRefusedError, match="not allowed"):
        run_query(sql, lake)


@pytest.mark.parametrize(
    "sql",
    [
        "with recursive n(i) as (select 1 union all select i + 1 from n where i < 3) "
        "select count(*) from n",
        "with m as materialized (select * from raw.readings) select count(*) from m",
        "select count(*) from (select value, row_number() over (order by value) from raw.readings)",
        "select * from information_schema.tables where table_schema = 'raw'",
        "summarize raw.readings",
        "describe raw.readings",
        "select * from ducklake_table_info('lake')",
        "select * from raw.readings where value in (select unnest([1, 2]))",
    ],
)
def test_ordinary_reading_queries_are_allowed(lake: PhloSettings, sql: str) -> None:
    assert run_query(sql, lake).columns


@pytest.fixture
def http_listener(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A local HTTP server in its own process (a thread here would make the sandbox spawn
    instead of fork), logging every request it receives to a file: (port, log)."""
    log = tmp_path / "requests.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "0"],
            cwd=tmp_path,
            stdout=sink,
            stderr=sink,
        )
    try:
        deadline = time.monotonic() + 30
        while not (started := re.search(r"port (\d+)", log.read_text())):
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        port = int(started[1])
        urllib.request.urlopen(f"http://127.0.0.1:{port}/").close()  # its log works
        assert "GET / " in log.read_text()
        log.write_text("")
        yield port, log
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize(
    "sql",
    [
        "select * from read_parquet('{url}/lake.parquet')",
        "select * from read_parquet(['{url}/a.parquet', '{url}/b.parquet'])",
        "select * from read_parquet('{url}/col/delete?collection=lake')",
        "select * from parquet_metadata('{url}/m.parquet')",
        "select * from parquet_schema('{url}/s.parquet')",
        "select * from glob('{url}/*')",
        "select * from read_parquet('{url}/' || 'built.parquet')",
        "select count(*) from raw.readings where exists "
        "(select 1 from read_parquet('{url}/sub.parquet'))",
    ],
)
def test_a_refused_url_receives_no_request(
    lake: PhloSettings, http_listener: tuple[int, Path], sql: str
) -> None:
    port, log = http_listener
    with pytest.raises(QueryRefusedError, match="not allowed"):
        run_query(sql.format(url=f"http://127.0.0.1:{port}"), lake)
    assert log.read_text() == ""


def test_refusing_a_file_outside_the_lake_does_not_say_whether_it_exists(
    lake: PhloSettings, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.parquet"
    query(f"copy (select 42 as answer) to '{outside}'", lake)  # a real Parquet file
    inside_then_out = f"{lake.lake_data_path.rstrip('/')}/raw/../../../{outside.name}"
    env = {**os.environ, "PHLO_HOME": str(lake.home)}
    answers = []
    for path in (
        str(outside),
        str(tmp_path / "missing.parquet"),
        "/etc/passwd",
        "/etc/no-such-file",
        inside_then_out,
    ):
        with pytest.raises(QueryRefusedError) as refused:
            run_query(f"select * from read_parquet('{path}')", lake)
        cli = subprocess.run(
            [PHLO, "query", f"select * from parquet_metadata('{path}')"],
            capture_output=True,
            text=True,
            env=env,
        )
        answers.append((str(refused.value), cli.returncode, cli.stdout, cli.stderr))
    assert answers[0][1] == 2
    assert path_free(answers[0][3])
    assert all(answer == answers[0] for answer in answers), answers


def path_free(message: str) -> bool:
    return "/" not in message and message.count("\n") == 1


def test_a_pattern_matching_nothing_in_the_lake_is_a_query_error(lake: PhloSettings) -> None:
    with pytest.raises(QueryError, match="No files found"):
        run_query(f"select * from read_parquet('{lake.lake_data_path}nothing/*.parquet')", lake)
