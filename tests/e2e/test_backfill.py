"""`phlo backfill` as a user runs it: real `phlo` processes against a local Nightscout-compatible
server, state read back from the Dagster instance, tables compared with a clean build."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from locations.nightscout.sample_data import entries_between
from locations.nightscout.sample_server import SampleNightscoutServer
from phlo_core.calendar import parse_day_range
from phlo_core.runs.engine import materialize
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


def environment(home: Path, server: SampleNightscoutServer) -> dict[str, str]:
    """What a user's shell would hold to run `phlo` on this home against the server."""
    return {
        **os.environ,
        "PHLO_HOME": str(home),
        "PHLO_TIMEZONE": ZONE,
        "NIGHTSCOUT_URL": server.url,
        "NIGHTSCOUT_API_SECRET": TEST_SECRET,
    }


def phlo(home: Path, server: SampleNightscoutServer, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PHLO, *args],
        env=environment(home, server),
        cwd=home.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )


def status_of(home: Path, server: SampleNightscoutServer) -> dict[str, object]:
    """`phlo status --json` of the ingestion over FIRST..LAST, with every daily asset of the
    selection agreeing with it."""
    done = phlo(
        home,
        server,
        "status",
        "glucose_entries+",
        "--start-date",
        FIRST,
        "--end-date",
        LAST,
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assets = json.loads(done.stdout)
    assert [a["asset"] for a in assets][:2] == ["dlt_glucose_entries", "stg_glucose_entries"]
    keys = ("done", "missing", "failed", "running", "failed_days")
    found = [{key: asset[key] for key in keys} for asset in assets]
    assert all(entry == found[0] for entry in found), found
    return found[0]


def run_details(settings: PhloSettings) -> list[tuple[str, ...]]:
    from phlo_core.runs.instance import instance_for

    return [
        (
            r.dagster_run.run_id[:8],
            r.dagster_run.status.value,
            r.dagster_run.tags.get("dagster/partition", ""),
            r.dagster_run.tags.get("phlo/pid", ""),
        )
        for r in instance_for(settings).get_run_records()
    ]


def backfill_runs(settings: PhloSettings) -> list[tuple[str, str]]:
    """(backfill id, status) of every run in the instance."""
    from phlo_core.runs.instance import instance_for

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


def planned(output: str) -> tuple[int, int]:
    """(days, ranges) to run, as a dry run prints them or a real run announces them."""
    found = re.search(r"(\d+) day\(s\)(?: to run)? in (\d+) range\(s\)", output)
    assert found, output
    return int(found[1]), int(found[2])


def test_a_dry_run_plans_exactly_what_the_run_does(
    tmp_path: Path, server: SampleNightscoutServer, source: FlakySource
) -> None:
    home = tmp_path / "home"
    ingest = ("backfill", "dlt_glucose_entries", "--only", "--chunk-size", "1")
    first = phlo(home, server, *ingest, "--partitions", "2024-03-02,2024-03-03")
    assert first.returncode == 0, first.stderr
    for args, expected in [
        (["--start-date", FIRST, "--end-date", "2024-03-04", "--missing"], (2, 2)),
        (["--start-date", FIRST, "--end-date", "2024-03-04"], (4, 4)),
        (["--partitions", "2024-03-01,2024-03-04"], (2, 2)),
    ]:
        dry = phlo(home, server, *ingest, *args, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        real = phlo(home, server, *ingest, *args)
        assert real.returncode == 0, real.stderr
        assert planned(dry.stdout) == planned(real.stderr) == expected, (args, dry.stdout)

    nothing = phlo(
        home, server, *ingest, "--start-date", FIRST, "--end-date", "2024-03-04", "--missing"
    )
    assert nothing.returncode == 0, nothing.stderr
    assert "nothing to do" in nothing.stdout
    assert "Error" not in nothing.stderr

    source.broken.set()
    try:
        broken = phlo(
            home, server, *ingest, "--start-date", "2024-03-05", "--end-date", "2024-03-07"
        )
    finally:
        source.broken.clear()
    assert broken.returncode == 1, broken.stderr
    dry = phlo(home, server, "backfill", "--resume", "--dry-run")
    real = phlo(home, server, "backfill", "--resume")
    assert real.returncode == 0, real.stderr
    assert planned(dry.stdout) == planned(real.stderr) == (1, 1)


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
    assert status_of(home, server) == {
        "done": 6,
        "missing": 0,
        "failed": 4,
        "running": 0,
        "failed_days": ["2024-03-05", "2024-03-06", "2024-03-07", "2024-03-08"],
    }
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
    assert status_of(home, server)["done"] == 10

    # Nothing left: --resume says so (exit 2); --missing over a wider set runs only the new day.
    assert phlo(home, server, "backfill", "--resume").returncode == 2
    missing = phlo(
        home,
        server,
        "backfill",
        "glucose_entries",  # the table's name: its ingestion, with everything downstream
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
        (["glucose", "--start-date", FIRST, "--end-date", LAST], "unknown asset 'glucose'"),
        (["--resume"], "nothing to resume: this instance has no backfill yet"),
    ],
)
def test_bad_input_is_a_usage_error_before_anything_loads(
    args: list[str], message: str, tmp_path: Path, server: SampleNightscoutServer
) -> None:
    # The selection, unless the case names its own or has none.
    own = not args[0].startswith("--") or args == ["--resume"]
    selection = [] if own else ["glucose_entries"]
    done = phlo(tmp_path / "home", server, "backfill", *selection, *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("phlo: error:") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "home" / "dagster").exists()


def start_backfill(home: Path, server: SampleNightscoutServer, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [PHLO, "backfill", "glucose_entries", "--start-date", FIRST, "--end-date", LAST, *args],
        env=environment(home, server),
        cwd=home.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )


def wait_for_first_range(process: subprocess.Popen) -> list[str]:
    """stderr lines up to the first range reported done."""
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if " ok 2024-03-" in line:
            return lines
    raise AssertionError(f"the backfill ended before a range was done: {''.join(lines)}")


def test_a_backfill_killed_with_sigkill_resumes_where_it_was(
    tmp_path: Path, server: SampleNightscoutServer, clean_build: dict[str, list[tuple]]
) -> None:
    home = tmp_path / "home"
    settings = settings_for(home, server)
    process = start_backfill(home, server, "--chunk-size", "2")
    wait_for_first_range(process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    # What was done is in the instance: the killed run is failed by the next command.
    resumed = phlo(home, server, "backfill", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    summary = re.search(r"(\d+) day\(s\) done, (\d+) skipped", resumed.stdout)
    assert summary is not None, resumed.stdout
    done, skipped = summary.groups()
    assert int(skipped) >= 2 and int(done) + int(skipped) == 10
    assert snapshot(settings) == clean_build
    assert "STARTED" not in {status for _, status in backfill_runs(settings)}
    assert status_of(home, server)["done"] == 10


def test_ctrl_c_stops_the_workers_and_the_backfill_resumes(
    tmp_path: Path, server: SampleNightscoutServer, clean_build: dict[str, list[tuple]]
) -> None:
    home = tmp_path / "home"
    settings = settings_for(home, server)
    process = start_backfill(home, server, "--chunk-size", "1", "--parallel", "2")
    wait_for_first_range(process)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground job
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    [backfill_id] = {tag for tag, _ in backfill_runs(settings)}
    assert f"resume with: phlo backfill --resume {backfill_id}" in stderr
    statuses = {status for _, status in backfill_runs(settings)}
    # None left going; the runs Ctrl-C stopped are canceled (or failed, when it hit them
    # between Dagster's own interrupt handling and phlo's).
    assert statuses <= {"SUCCESS", "CANCELED", "FAILURE"}, (run_details(settings), stderr)
    resumed = phlo(home, server, "backfill", "--resume", backfill_id[:12])
    assert resumed.returncode == 0, resumed.stderr
    assert snapshot(settings) == clean_build
    assert status_of(home, server)["done"] == 10


def worker_pids(parent: int) -> list[int]:
    """The `python -m phlo_core.backfill.workers` worker processes `parent` started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == parent and b"phlo_core.backfill.workers" in command:
            found.append(int(entry.name))
    return found


def test_a_worker_killed_fails_its_ranges_and_the_backfill_resumes(
    tmp_path: Path, server: SampleNightscoutServer, clean_build: dict[str, list[tuple]]
) -> None:
    home = tmp_path / "home"
    settings = settings_for(home, server)
    process = start_backfill(home, server, "--chunk-size", "1", "--parallel", "2")
    wait_for_first_range(process)
    [worker] = worker_pids(process.pid)
    os.kill(worker, signal.SIGKILL)  # as the kernel's out-of-memory killer would
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr
    assert "worker process ended (exit code -9)" in stderr
    [listed] = json.loads(phlo(home, server, "backfill", "list", "--json").stdout)
    assert not listed["finished"] and listed["done"] < 10
    resumed = phlo(home, server, "backfill", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert snapshot(settings) == clean_build


def test_processes_building_the_same_days_at_once_keep_each_row_once(
    tmp_path: Path, server: SampleNightscoutServer, clean_build: dict[str, list[tuple]]
) -> None:
    """dbt's daily models are built without the lakehouse's writer lock (backfill workers build
    their days at once): three processes rebuilding the same ten days at the same time all
    succeed (a commit that meets another's is built again) and each reading is there once."""
    home = tmp_path / "home"
    ingested = phlo(home, server, "materialize", "dlt_glucose_entries", "-p", f"{FIRST}..{LAST}")
    assert ingested.returncode == 0, ingested.stderr
    processes = [
        subprocess.Popen(
            [PHLO, "materialize", "stg_glucose_entries+", "--partition", f"{FIRST}..{LAST}"],
            env=environment(home, server),
            cwd=home.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for process in processes:
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr
        assert "nightscout: succeeded: 13 asset(s) for 2024-03-01..2024-03-10" in stdout
    assert snapshot(settings_for(home, server)) == clean_build


def test_workers_die_with_a_backfill_killed_with_sigkill(
    tmp_path: Path, server: SampleNightscoutServer, clean_build: dict[str, list[tuple]]
) -> None:
    """Only the `phlo backfill` process killed (not its process group): its worker does not go
    on alone; --resume then completes the backfill."""
    home = tmp_path / "home"
    process = start_backfill(home, server, "--chunk-size", "1", "--parallel", "2")
    wait_for_first_range(process)
    [worker] = worker_pids(process.pid)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)

    def running(pid: int) -> bool:  # a zombie (killed, not yet reaped by init) is not
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 5  # its ranges left would take it longer than this
    while running(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(worker), "the worker outlived the backfill"
    resumed = phlo(home, server, "backfill", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert snapshot(settings_for(home, server)) == clean_build
