"""A lakehouse is its catalog and its data together: a catalog that is gone or emptied beside
data files is an error (not a silent new lakehouse), and days materialized into an earlier
lakehouse do not count as done in a new one (`phlo status`, `phlo backfill --missing`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from locations.nightscout.sample_server import SampleNightscoutServer
from tests.conftest import TEST_SECRET
from tests.e2e.test_cli import phlo

DAYS = "2024-01-15..2024-01-16"


@pytest.fixture
def materialized(tmp_path: Path):
    with SampleNightscoutServer(api_secret=TEST_SECRET) as server:
        env = {
            "PHLO_HOME": str(tmp_path / "home"),
            "NIGHTSCOUT_URL": server.url,
            "NIGHTSCOUT_API_SECRET": TEST_SECRET,
        }
        run = phlo("materialize", "dlt_glucose_entries+", "--partition", DAYS, env=env)
        assert run.returncode == 0, run.stderr
        yield env, tmp_path / "home"


def files_of(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def days_done(env: dict[str, str]) -> dict[str, int]:
    status = phlo(
        "status",
        "dlt_glucose_entries+",
        "--start-date",
        "2024-01-15",
        "--end-date",
        "2024-01-16",
        "--json",
        env=env,
    )
    assert status.returncode == 0, status.stderr
    return {entry["asset"]: entry["done"] for entry in json.loads(status.stdout)}


@pytest.mark.parametrize("damage", ["emptied", "deleted"])
def test_a_lost_catalog_beside_data_files_is_an_error_and_changes_nothing(
    materialized: tuple[dict[str, str], Path], damage: str
) -> None:
    env, home = materialized
    catalog = home / "lake" / "catalog.sqlite"
    data = home / "lake" / "data"
    assert files_of(data), "the days wrote Parquet files"
    if damage == "emptied":
        catalog.write_bytes(b"")
    else:
        catalog.unlink()
    before = files_of(home / "lake")

    for args in (
        ["query", "select count(*) from raw.glucose_entries"],
        ["materialize", "dlt_glucose_entries+", "--partition", "2024-01-15"],
    ):
        result = phlo(*args, env=env)
        assert result.returncode == 1, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("phlo: error:")]
        assert len(errors) == 1, result.stderr
        error = errors[0]
        assert str(catalog) in error and str(data) in error, error
        assert "restore the catalog" in error and "move the data folder away" in error
        assert files_of(home / "lake") == before, "nothing created or written"


def test_days_of_an_earlier_lakehouse_are_missing_in_a_new_one(
    materialized: tuple[dict[str, str], Path],
) -> None:
    env, home = materialized
    assert set(days_done(env).values()) == {2}
    shutil.move(home / "lake", home.parent / "old-lake")  # start over, Dagster's history stays

    assert set(days_done(env).values()) == {0}, "no lakehouse: nothing is done"
    dry = phlo(
        "backfill",
        "dlt_glucose_entries+",
        "--start-date",
        "2024-01-15",
        "--end-date",
        "2024-01-16",
        "--missing",
        "--dry-run",
        env=env,
    )
    assert dry.returncode == 0, dry.stderr
    assert "done:     0 already materialized" in dry.stdout, dry.stdout
    assert "to run:   2 day(s)" in dry.stdout, dry.stdout

    again = phlo("materialize", "dlt_glucose_entries+", "--partition", "2024-01-15", env=env)
    assert again.returncode == 0, again.stderr
    done = days_done(env)
    assert set(done.values()) == {1}, done
