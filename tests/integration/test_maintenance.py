"""Lakehouse maintenance: old snapshots expire, superseded files go, the data stays."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from phlo_core.lakehouse.connect import query
from phlo_core.lakehouse.maintenance import maintain
from phlo_core.lakehouse.writes import PartitionWrite, replace_partitions
from phlo_core.settings import PhloSettings

DAY = dt.date(2024, 1, 15)
PHLO = str(Path(sys.executable).with_name("phlo"))


def rewrite_day(settings: PhloSettings, times: int) -> None:
    for attempt in range(times):
        rows = pa.table({"day": [DAY] * 5000, "value": [attempt] * 5000})
        columns = {"day": "date", "value": "integer"}
        replace_partitions(
            [PartitionWrite("raw.values", columns, "day", DAY, DAY + dt.timedelta(days=1), rows)],
            settings,
        )


def parquet_files(settings: PhloSettings) -> list[Path]:
    """The files of the table the test rewrites (the lakehouse's birth record has its own)."""
    return list(Path(settings.lake_data_path, "raw", "values").rglob("*.parquet"))


def test_maintenance_expires_snapshots_and_deletes_superseded_files(
    make_settings: Callable[..., PhloSettings],
) -> None:
    settings = make_settings()
    rewrite_day(settings, 6)
    snapshots = query("select count(*) from ducklake_snapshots('lake')", settings).rows[0][0]
    assert len(parquet_files(settings)) >= 6

    kept = maintain(settings, retention_days=7)
    assert kept.snapshots_expired == 0, "every snapshot is minutes old"
    assert kept.files_deleted == 0

    report = maintain(settings, retention_days=0)
    assert report.snapshots_expired >= snapshots - 1
    assert report.files_deleted >= 5
    assert len(parquet_files(settings)) == 1
    assert query("select count(*), min(value), max(value) from raw.values", settings).rows == [
        (5000, 5, 5)
    ]


def test_the_cli_reports_what_it_did(make_settings: Callable[..., PhloSettings]) -> None:
    settings = make_settings()
    rewrite_day(settings, 3)
    result = subprocess.run(
        [PHLO, "maintenance", "--retention-days", "0"],
        env={**os.environ, "PHLO_HOME": str(settings.home)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "maintenance: expired" in result.stdout
    assert "older than 0 day(s)" in result.stdout
    assert len(parquet_files(settings)) == 1
