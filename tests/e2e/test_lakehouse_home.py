"""A home as users treat it: a lakehouse is its catalog and its data together (a catalog that is
gone or emptied beside data files is an error, not a silent new lakehouse; days materialized
into an earlier lakehouse do not count as done in a new one), and a home that is read-only (a
mounted backup) can still be queried, its status and its logs read."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from locations.nightscout.sample_server import SampleNightscoutServer
from tests.conftest import TEST_SECRET
from tests.e2e.test_cli import PHLO, phlo

# Each test materializes its own home (about 20 s): the heavy half of the suite.
pytestmark = pytest.mark.slow

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
        ["status", "dlt_glucose_entries", "--start-date", "2024-01-15", "--end-date", "2024-01-16"],
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


def read_only(home: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`phlo ARGS` with `home` mounted read-only for this command alone (its own mount
    namespace: nothing to undo, whatever happens)."""
    command = (
        f"mount --bind -o ro {shlex.quote(str(home))} {shlex.quote(str(home))} && "
        f"exec {shlex.join([PHLO, *args])}"
    )
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", command],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )


def test_a_read_only_home_can_be_queried_and_its_status_and_logs_read(
    materialized: tuple[dict[str, str], Path],
) -> None:
    env, home = materialized
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("mounting the home read-only needs root and unshare")
    probe = read_only(home, "--help", env=env)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount read-only here: {probe.stderr.strip()}")
    status_args = (
        "status",
        "dlt_glucose_entries+",
        "--start-date",
        "2024-01-15",
        "--end-date",
        "2024-01-16",
        "--json",
    )
    count = ("query", "select count(*) from raw.glucose_entries", "--format", "csv")
    expected_count, expected_status = phlo(*count, env=env), phlo(*status_args, env=env)
    before = files_of(home)

    counted = read_only(home, *count, env=env)
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout == expected_count.stdout and int(counted.stdout.split()[-1]) > 500

    status = read_only(home, *status_args, env=env)
    assert status.returncode == 0, status.stderr
    assert {entry["done"] for entry in json.loads(status.stdout)} == {2}
    assert json.loads(status.stdout) == json.loads(expected_status.stdout)

    logs = read_only(home, "logs", "--asset", "dlt_glucose_entries", "--json", env=env)
    assert logs.returncode == 0, logs.stderr
    assert [json.loads(line) for line in logs.stdout.splitlines()]

    written = read_only(
        home, "materialize", "dlt_glucose_entries", "--partition", "2024-01-17", env=env
    )
    assert written.returncode == 2 and "Read-only file system" in written.stderr
    assert files_of(home) == before


def test_docs_describe_every_model_with_the_lakehouses_column_types(
    materialized: tuple[dict[str, str], Path],
) -> None:
    env, home = materialized
    result = phlo("docs", env=env)
    assert result.returncode == 0, result.stderr
    assert {line.split(":")[0] for line in result.stdout.splitlines()} == {
        "insights",
        "nightscout",
        "weather",
    }
    page = (home / "docs" / "nightscout" / "static_index.html").read_text()
    assert "fct_daily_glucose_metrics" in page and "time in range" in page.lower()
    catalog = json.loads((home / "docs" / "nightscout" / "catalog.json").read_text())
    columns = catalog["nodes"]["model.nightscout.fct_daily_glucose_metrics"]["columns"]
    assert columns["reading_date"]["type"] == "DATE"  # read from the lakehouse's table
