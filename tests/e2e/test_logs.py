"""`phlo logs` against real runs of the pipelines, a failing one included."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from locations.nightscout.sample_server import SampleNightscoutServer
from locations.weather.sample_server import SampleOpenMeteoServer
from phlo_core.calendar import parse_day_range
from phlo_core.runlogs.model import LEVELS, LogFilter, LogsError
from phlo_core.runlogs.read import read_entries, resolve_run_id
from phlo_core.runlogs.stores import InstanceStorage, SqliteFiles, open_logs
from phlo_core.runs.engine import RunOutcome, materialize
from phlo_core.settings import PhloSettings, load_settings
from tests.conftest import TEST_SECRET
from tests.e2e.helpers import assert_same_entries

PHLO = str(Path(sys.executable).with_name("phlo"))
DAY = parse_day_range("2024-02-01")


class Home:
    def __init__(self, settings: PhloSettings, runs: dict[str, RunOutcome]) -> None:
        self.settings = settings
        self.runs = runs

    def env(self) -> dict[str, str]:
        return {**os.environ, "PHLO_HOME": str(self.settings.home), "NO_COLOR": "1"}

    def phlo(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PHLO, "logs", *args], env=self.env(), capture_output=True, text=True, timeout=120
        )


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[SampleNightscoutServer, SampleOpenMeteoServer]]:
    with (
        SampleNightscoutServer(api_secret=TEST_SECRET) as nightscout,
        SampleOpenMeteoServer() as weather,
    ):
        yield nightscout, weather


@pytest.fixture(scope="module")
def home(
    tmp_path_factory: pytest.TempPathFactory,
    servers: tuple[SampleNightscoutServer, SampleOpenMeteoServer],
) -> Home:
    """A glucose run that succeeds, one that fails (the source is down), a weather run."""
    nightscout, weather = servers
    settings = load_settings(
        phlo_home=tmp_path_factory.mktemp("logs") / "phlo",
        nightscout_url=nightscout.url,
        nightscout_api_secret=TEST_SECRET,
        open_meteo_url=weather.url,
        open_meteo_forecast_url=weather.url,
        http_max_attempts=2,
        http_backoff_seconds=0.01,
    )
    runs: dict[str, RunOutcome] = {}
    nightscout.fail_next(1, status=503)  # one retry, logged
    [runs["glucose"]] = materialize("dlt_glucose_entries,stg_glucose_entries", DAY, settings)
    nightscout.fail_next(2, status=503)
    [runs["failed"]] = materialize("dlt_glucose_entries", DAY, settings)
    [runs["weather"]] = materialize("dlt_weather_observations", DAY, settings)
    assert [r.success for r in runs.values()] == [True, False, True]
    return Home(settings, runs)


def entries(home: Home, **filters: object) -> list:
    return read_entries(open_logs(home.settings), LogFilter(**filters))  # pyright: ignore[reportArgumentType]


def test_the_files_and_dagsters_storage_classes_give_the_same_entries(home: Home) -> None:
    """The default SQLite instance is read from its files without Dagster; any other through
    Dagster's storage classes. Same instance, same entries, whatever the filter."""
    from phlo_core.runs.instance import instance_for

    files = open_logs(home.settings)
    assert isinstance(files, SqliteFiles)
    storage = InstanceStorage(instance_for(home.settings))
    assert_same_entries(files, storage, home.runs["failed"].run_id)
    assert files.has_asset("dlt_weather_observations") and not files.has_asset("nope")


def test_the_latest_entries_of_every_run_oldest_first(home: Home) -> None:
    found = entries(home)
    assert {e.run_id for e in found} == {r.run_id for r in home.runs.values()}
    stamps = [e.timestamp for e in found]
    assert stamps == sorted(stamps)
    kinds = {e.event_type for e in found}
    assert {"PIPELINE_START", "PIPELINE_FAILURE", "STEP_FAILURE", None} <= kinds
    assert {"ASSET_MATERIALIZATION", "ASSET_CHECK_EVALUATION", "PIPELINE_SUCCESS"} <= kinds
    assert len(entries(home, limit=5)) == 5
    assert entries(home, limit=5) == found[-5:]


def test_level_job_asset_run_and_time_filters_combine(home: Home) -> None:
    errors = entries(home, level=LEVELS["ERROR"])
    assert {e.event_type for e in errors} == {"STEP_FAILURE", "PIPELINE_FAILURE"}
    assert {e.run_id for e in errors} == {home.runs["failed"].run_id}
    failure = next(e for e in errors if e.event_type == "STEP_FAILURE")
    assert "Nightscout unavailable" in failure.message and failure.stack

    weather = entries(home, job="weather_pipeline")
    assert {e.run_id for e in weather} == {home.runs["weather"].run_id}
    assert {e.job for e in weather} == {"weather_pipeline"}

    staged = entries(home, asset="stg_glucose_entries")
    assert staged and {e.run_id for e in staged} == {home.runs["glucose"].run_id}
    assert {e.asset for e in staged if e.event_type} == {"stg_glucose_entries"}
    assert any(e.event_type is None and "dbt build" in e.message for e in staged)

    ingestion_errors = entries(home, asset="dlt_glucose_entries", level=LEVELS["ERROR"])
    assert [e.event_type for e in ingestion_errors] == ["STEP_FAILURE"]

    only_glucose = entries(home, run_ids=[home.runs["glucose"].run_id])
    assert {e.run_id for e in only_glucose} == {home.runs["glucose"].run_id}

    future = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    assert entries(home, since=future) == []
    assert entries(home, job="glucose_pipeline", level=LEVELS["ERROR"]) == errors


def test_json_lines_carry_stable_fields_and_no_secret(home: Home) -> None:
    result = home.phlo("--json", "--limit", "500")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records
    keys = {"timestamp", "level", "run_id", "job", "step", "asset", "event_type", "message"}
    assert all(keys | {"fields"} <= set(r) for r in records)
    [loaded] = [
        r
        for r in records
        if r["event_type"] == "ASSET_MATERIALIZATION" and r["asset"] == "dlt_glucose_entries"
    ]
    assert loaded["fields"]["rows_loaded"] > 200
    assert "readings loaded" in loaded["message"]
    assert TEST_SECRET not in result.stdout + result.stderr


def test_phlo_lines_carry_their_fields(home: Home) -> None:
    """phlo's structured log lines reach the event log with their fields (retries included)."""
    lines = [e for e in entries(home, run_ids=[home.runs["glucose"].run_id]) if not e.event_type]
    retry = next(e for e in lines if e.message == "retrying request")
    assert retry.level_name == "WARNING" and retry.step == "dlt_glucose_entries"
    assert retry.fields["source"] == "Nightscout" and retry.fields["attempt"] == 1
    assert retry.fields["reason"] == "HTTP 503" and retry.fields["wait_seconds"] >= 0
    fetched = next(e for e in lines if e.message == "fetched entries")
    ingested = next(e for e in lines if e.message == "ingested")
    assert fetched.fields["days"] == "2024-02-01"
    assert fetched.fields["entries"] >= ingested.fields["rows"] > 200
    summary = home.runs["glucose"].summaries["dlt_glucose_entries"]  # "288 readings loaded, ..."
    assert ingested.fields["rows"] == int(summary.split()[0])
    assert ingested.fields["asset"] == "dlt_glucose_entries" and ingested.fields["rejected"] == 0


def test_the_command_prints_one_line_an_entry_and_rejects_bad_input(home: Home) -> None:
    failed = home.runs["failed"].run_id
    result = home.phlo("--run-id", failed[:8], "--level", "error")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(f" ERROR    {failed[:8]} glucose_pipeline " in x for x in lines)
    full = home.phlo("--run-id", failed, "--level", "ERROR", "--full")
    assert "Traceback" in full.stdout or "File " in full.stdout  # the stack, whole

    for bad, says in [
        (["--since", "yesterday"], "is not a duration"),
        (["--level", "LOUD"], "is not one of DEBUG"),
        (["--run-id", "ffffffff"], "no run id starts with 'ffffffff'"),
        (["--asset", "no_such_asset"], "no run in this instance has touched"),
        (["--limit", "0"], "--limit must be between 1 and"),
    ]:
        refused = home.phlo(*bad)
        assert refused.returncode == 2, (bad, refused.stderr)
        assert says in refused.stderr and refused.stdout == ""


def test_an_ambiguous_prefix_lists_the_runs() -> None:
    from dagster import DagsterInstance
    from dagster._core.test_utils import create_run_for_test

    instance = DagsterInstance.ephemeral()
    for run_id in ("abc10000-0000-0000-0000-000000000000", "abc20000-0000-0000-0000-000000000000"):
        create_run_for_test(instance, job_name="x", run_id=run_id)
    source = InstanceStorage(instance)
    with pytest.raises(LogsError, match="'abc' matches several runs: abc2.*, abc1"):
        resolve_run_id(source, "abc")
    assert resolve_run_id(source, "ABC1") == "abc10000-0000-0000-0000-000000000000"


def test_no_instance_is_an_error_naming_the_path(tmp_path: Path) -> None:
    result = subprocess.run(
        [PHLO, "logs"],
        env={**os.environ, "PHLO_HOME": str(tmp_path / "empty")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"no Dagster instance at {tmp_path / 'empty' / 'dagster'}" in result.stderr
    assert not (tmp_path / "empty" / "dagster" / "dagster.yaml").exists(), "nothing created"


def test_follow_prints_the_entries_of_a_run_started_after_it(home: Home) -> None:
    follower = subprocess.Popen(
        [PHLO, "logs", "--follow", "--job", "weather_pipeline", "--limit", "1"],
        env=home.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        first = follower.stdout.readline()  # the newest entry so far: the follower is reading
        assert home.runs["weather"].run_id[:8] in first
        [later] = materialize("dlt_weather_observations", DAY, home.settings)
        deadline = time.monotonic() + 60
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = follower.stdout.readline()
            seen.append(line)
            if later.run_id[:8] in line and "Finished execution" in line:
                break
        assert any(later.run_id[:8] in line for line in seen), seen
        assert len([x for x in seen if "Started execution" in x]) == 1, "each entry once"
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=30)
    assert follower.returncode == 0


def test_text_lines_show_the_fields_and_the_day(home: Home) -> None:
    """What --json carries is on the text line too: a retry's attempt, wait and reason, what
    was fetched, and which day each materialization of a range is."""
    run = home.runs["glucose"].run_id
    result = home.phlo("--run-id", run, "--limit", "1000", "--full")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    retry = next(line for line in lines if "retrying request" in line)
    assert "source=Nightscout" in retry and "attempt=1" in retry
    assert 'reason="HTTP 503"' in retry and "wait_seconds=" in retry
    fetched = next(line for line in lines if "fetched entries" in line)
    assert "days=2024-02-01" in fetched and "entries=" in fetched
    loaded = next(line for line in lines if "readings loaded" in line)
    assert "dlt_glucose_entries [2024-02-01]:" in loaded


def test_a_reader_that_goes_away_ends_the_command_quietly(home: Home) -> None:
    def piped(reader: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            f'{PHLO} logs --limit 100000 | {reader}; echo "status=${{PIPESTATUS[0]}}"',
            shell=True,
            executable="/bin/bash",
            capture_output=True,
            text=True,
            env=home.env(),
            timeout=120,
        )

    # `true` is gone long before phlo has started: its first write meets a closed pipe.
    gone = piped("true")
    assert gone.stdout == "status=141\n" and gone.stderr == "", (gone.stdout, gone.stderr)
    # `head` leaves after a line: whether phlo's last write still fitted in the pipe is a race
    # (exit 0 or 141), but either way the reader sees one line and nobody a traceback.
    head = piped("head -n 1")
    lines = head.stdout.splitlines()
    assert len(lines) == 2 and lines[1] in ("status=0", "status=141"), head.stdout
    assert head.stderr == "", head.stderr


def test_levels_are_read_in_any_case_and_warn_means_warning(home: Home) -> None:
    shown = {
        spelling: home.phlo("--level", spelling, "--limit", "100000").stdout
        for spelling in ("warn", "Warning", "WARNING")
    }
    assert len(set(shown.values())) == 1 and " WARNING " in shown["warn"]
