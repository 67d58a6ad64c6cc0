"""`phlo backfill` as a user runs it: real `phlo` processes against a local Nightscout-compatible
server, state read back from the Dagster instance, tables compared with a clean build."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from locations.nightscout.sample_data import entries_between
from locations.nightscout.sample_server import SampleNightscoutServer
from phlo_core.calendar import parse_day_range
from phlo_core.engine import materialize
from phlo_core.settings import PhloSettings, load_settings
from tests.conftest import TEST_SECRET
from tests.e2e.helpers import snapshot

pytestmark = pytest.mark.slow

PHLO = str(Path(sys.executable).with_name("phlo"))
ZONE = "America/New_York"
FIRST, LAST = "2024-03-01", "2024-03-10"
BROKEN_DAY_MS = (1709701200000, 1709787600000)  # 2024-03-06 in New York, as epoch ms


class FlakySource:
    """Sample entries; while `broken`, any request reaching into 2024-03-06 fails (HTTP 500)."""

    def __init__(self) -> None:
        from zoneinfo import ZoneInfo

        self.zone = ZoneInfo(ZONE)
        self.broken = threading.Event()

    def __call__(self, lo: int, hi: int) -> Iterator[dict]:
        if self.broken.is_set() and lo < BROKEN_DAY_MS[1] and hi > BROKEN_DAY_MS[0]:
            raise RuntimeError("the source is down for this day")
        return entries_between(lo, hi, self.zone)


@pytest.fixture(scope="module")
def source() -> FlakySource:
    return FlakySource()


@pytest.fixture(scope="module")
def server(source: FlakySource) -> Iterator[SampleNightscoutServer]:
    with SampleNightscoutServer(timezone=ZONE, api_secret=TEST_SECRET, entries=source) as s:
        yield s


def settings_for(home: Path, server: SampleNightscoutServer) -> PhloSettings:
    return load_settings(
        phlo_home=home,
        phlo_timezone=ZONE,
        nightscout_url=server.url,
        nightscout_api_secret=TEST_SECRET,
    )


@pytest.fixture(scope="module")
def clean_build(
    tmp_path_factory: pytest.TempPathFactory, server: SampleNightscoutServer
) -> dict[str, list[tuple]]:
    settings = settings_for(tmp_path_factory.mktemp("clean") / "home", server)
    outcomes = materialize("dlt_glucose_entries+", parse_day_range(f"{FIRST}..{LAST}"), settings)
    assert outcomes and all(o.success for o in outcomes), [o.errors for o in outcomes]
    return snapshot(settings)


def phlo(home: Path, server: SampleNightscoutServer, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PHLO_HOME": str(home),
        "PHLO_TIMEZONE": ZONE,
        "NIGHTSCOUT_URL": server.url,
        "NIGHTSCOUT_API_SECRET": TEST_SECRET,
    }
    return subprocess.run(
        [PHLO, *args], env=env, cwd=home.parent, capture_output=True, text=True, timeout=600
    )


def backfill_runs(settings: PhloSettings) -> list[tuple[str, str]]:
    """(backfill id, status) of every run in the instance."""
    from phlo_core.instance import instance_for

    records = instance_for(settings).get_run_records()
    return [
        (r.dagster_run.tags.get("dagster/backfill", ""), r.dagster_run.status.value)
        for r in records
    ]


def test_a_dry_run_prints_the_plan_and_starts_nothing(
    tmp_path: Path, server: SampleNightscoutServer
) -> None:
    home = tmp_path / "home"
    done = phlo(
        home,
        server,
        "backfill",
        "dlt_glucose_entries+",
        "--start-date",
        FIRST,
        "--end-date",
        LAST,
        "--chunk-size",
        "4",
        "--parallel",
        "2",
        "--dry-run",
    )
    assert done.returncode == 0, done.stderr
    assert "days:     10 (2024-03-01..2024-03-10)" in done.stdout
    assert "to run:   10 day(s) in 3 range(s) of at most 4 day(s), 2 worker(s)" in done.stdout
    assert backfill_runs(settings_for(home, server)) == []


def test_a_range_in_parallel_equals_a_clean_build_and_resumes_after_a_failure(
    tmp_path: Path,
    server: SampleNightscoutServer,
    source: FlakySource,
    clean_build: dict[str, list[tuple]],
) -> None:
    home = tmp_path / "home"
    settings = settings_for(home, server)
    source.broken.set()
    try:
        failed = phlo(
            home,
            server,
            "backfill",
            "dlt_glucose_entries+",
            "--start-date",
            FIRST,
            "--end-date",
            LAST,
            "--chunk-size",
            "4",
            "--parallel",
            "2",
        )
    finally:
        source.broken.clear()
    assert failed.returncode == 1, failed.stderr
    [backfill_id] = {tag for tag, _ in backfill_runs(settings)}
    assert f"resume with: phlo backfill --resume {backfill_id}" in failed.stderr
    assert "4 failed" in failed.stdout  # the range 2024-03-05..2024-03-08
    listed = json.loads(phlo(home, server, "backfill", "list", "--json").stdout)
    assert [(b["id"], b["done"], b["failed"], b["finished"]) for b in listed] == [
        (backfill_id, 6, 4, False)
    ]

    resumed = phlo(home, server, "backfill", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "4 day(s) done, 6 skipped" in resumed.stdout
    assert snapshot(settings) == clean_build
    statuses = backfill_runs(settings)
    assert {tag for tag, _ in statuses} == {backfill_id}  # every run carries the backfill's id
    listed = json.loads(phlo(home, server, "backfill", "list", "--json").stdout)
    assert listed[0]["finished"] and listed[0]["done"] == 10

    # Nothing left: --resume says so (exit 2); --missing over a wider set runs only the new day.
    assert phlo(home, server, "backfill", "--resume").returncode == 2
    missing = phlo(
        home,
        server,
        "backfill",
        "dlt_glucose_entries+",
        "--partitions",
        "2024-03-05,2024-03-11",
        "--missing",
    )
    assert missing.returncode == 0, missing.stderr
    assert "1 day(s) done, 0 skipped" in missing.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start-date", "2024-03-10", "--end-date", "2024-03-01"], "is before --start-date"),
        (["--start-date", "2024-3-1", "--end-date", "2024-03-02"], "YYYY-MM-DD"),
        (["--partitions", "2024-03-01", "--start-date", "2024-03-01"], "not both"),
        (
            ["--start-date", "2024-03-01", "--end-date", "2024-03-02", "--parallel", "0"],
            "--parallel must be 1 or more",
        ),
        (["--start-date", "1999-01-01", "--end-date", "1999-01-02"], "is outside the partitions"),
    ],
)
def test_bad_input_is_a_usage_error_before_anything_loads(
    args: list[str], message: str, tmp_path: Path, server: SampleNightscoutServer
) -> None:
    done = phlo(tmp_path / "home", server, "backfill", "dlt_glucose_entries+", *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("phlo: error:") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "home" / "dagster").exists()
