"""The `phlo` command as a user runs it: a subprocess, its output and its exit code."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from locations.nightscout.sample_server import SampleNightscoutServer
from tests.conftest import TEST_SECRET

PHLO = str(Path(sys.executable).with_name("phlo"))


def phlo(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [PHLO, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=300,
        check=False,
    )


def test_help_lists_the_commands_and_imports_nothing_heavy() -> None:
    result = phlo("--help")
    assert result.returncode == 0
    for command in ("materialize", "query", "demo"):
        assert command in result.stdout
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from phlo_cli.cli import app\n"
            "app(['--help'], result_action='return_value')\n"
            "print(sorted(m for m in ('dagster', 'dbt', 'duckdb') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["materialize", "dlt_glucose_entries", "--partition", "2024-02-30"], "not a date"),
        (["materialize", "dlt_glucose_entries", "--partition", "2023-12-31"], "2024-01-01.."),
        (["materialize", "dlt_glucose_entries"], "--partition"),
        (["query", "select 1", "--format", "xml"], "table"),
        (["frobnicate"], "frobnicate"),
        (["logs", "--since", "99999999999d"], "no run is that old"),
        (["logs", "--limit", "100000000000000000000"], "--limit must be between 1 and"),
        (["status", "--end-date", "9999-12-31"], "after the last day"),
        (
            ["materialize", "dlt_glucose_entries", "--partition", "2024-01-01..9999-12-31"],
            "after the last day",
        ),
        (["backfill", "dlt_glucose_entries", "--partitions", "9999-12-31"], "after the last day"),
        (["deploy", "workspace", "--port", "70000"], "--port must be from 1 to 65535"),
        (["deploy", "workspace", "--out", "/nonexistent/dir/w.yaml"], "cannot write"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    result = phlo(*args, env={"PHLO_HOME": str(tmp_path / "home")})
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("phlo: error:")]
    assert len(errors) == 1
    assert message in errors[0]


def test_compose_settings_that_up_writes_itself_are_a_usage_error(tmp_path: Path) -> None:
    extra = tmp_path / "locations.env"
    extra.write_text("NIGHTSCOUT_URL=http://127.0.0.1:9\nphlo_run_launcher=process\n")
    home = tmp_path / "home"
    result = phlo("deploy", "compose", "up", "--env-file", str(extra), env={"PHLO_HOME": str(home)})
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("phlo: error:")]
    assert len(errors) == 1 and "PHLO_RUN_LAUNCHER" in errors[0] and "--run-launcher" in errors[0]
    assert not (home / "deploy").exists()


@pytest.mark.parametrize(
    ("partition", "variable"), [("20240329", None), ("2024-W13-5", None), ("2024-01-15", "URL")]
)
def test_odd_dates_and_a_blank_url_are_usage_errors(
    partition: str, variable: str | None, tmp_path: Path
) -> None:
    env = {"PHLO_HOME": str(tmp_path / "home"), "NIGHTSCOUT_URL": ""}
    result = phlo("materialize", "dlt_glucose_entries", "--partition", partition, env=env)
    assert result.returncode == 2, result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("phlo: error:")]
    assert ("NIGHTSCOUT_URL is not set" if variable else "use YYYY-MM-DD") in error


def test_a_backfill_without_its_source_is_a_usage_error_and_records_nothing(
    tmp_path: Path,
) -> None:
    env = {"PHLO_HOME": str(tmp_path / "home"), "NIGHTSCOUT_URL": ""}
    result = phlo(
        "backfill",
        "dlt_glucose_entries",
        "--start-date",
        "2024-01-01",
        "--end-date",
        "2024-01-03",
        env=env,
    )
    assert result.returncode == 2, result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("phlo: error:")]
    assert "NIGHTSCOUT_URL is not set" in error and "resume" not in result.stderr
    listed = phlo("backfill", "list", "--json", env=env)
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stdout


def test_an_empty_answer_says_which_home_it_read_and_where_the_demo_is(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "demo" / "dagster").mkdir(parents=True)  # what `phlo demo` leaves beside it
    env = {"PHLO_HOME": str(home)}
    # Paths as short as they can be shown: relative to the working folder (tmp_path here).
    demo = "the demo's runs are in home/demo: PHLO_HOME=home/demo phlo"

    no_instance = phlo("logs", env=env)
    assert no_instance.returncode == 1 and f"{demo} logs" in no_instance.stderr
    days = ("--start-date", "2024-01-01", "--end-date", "2024-01-02")
    status = phlo("status", "dlt_glucose_entries", *days, env=env)
    assert status.returncode == 0, status.stderr
    assert f"no day is materialized in PHLO_HOME=home; {demo} status" in status.stderr
    listed = phlo("backfill", "list", env=env)
    assert listed.returncode == 0 and listed.stdout == ""
    assert f"no backfill recorded in PHLO_HOME=home; {demo} backfill list" in listed.stderr
    no_entries = phlo("logs", env=env)  # the instance exists now, with no run in it
    assert no_entries.returncode == 0 and no_entries.stdout == ""
    assert f"no entries match in PHLO_HOME=home; {demo} logs" in no_entries.stderr


def test_sample_serve_prints_settings_that_phlo_runs_on_and_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    serving = subprocess.Popen(
        [PHLO, "sample", "serve"],
        env={**os.environ, "PHLO_HOME": str(tmp_path / "home")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serving.stdout is not None
        exports: dict[str, str] = {}
        for line in serving.stdout:
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").strip().partition("=")
                exports[name] = shlex.split(value)[0]
            if line.startswith("# then"):
                break
        assert exports["PHLO_HOME"] == str(tmp_path / "home" / "demo")
        assert exports["NIGHTSCOUT_URL"].startswith("http://127.0.0.1:")
        assert exports["OPEN_METEO_URL"].startswith("http://127.0.0.1:")
        run = phlo("materialize", "dlt_glucose_entries", "--partition", "2024-01-20", env=exports)
        assert run.returncode == 0, run.stderr
        assert re.search(r"dlt_glucose_entries: 2\d\d readings loaded", run.stdout)
    finally:
        serving.send_signal(signal.SIGINT)
        assert serving.wait(timeout=30) == 0
    assert "sample sources stopped" in (serving.stderr.read() if serving.stderr else "")


def test_a_retry_is_shown_on_the_terminal_with_its_wait_and_reason(tmp_path: Path) -> None:
    with SampleNightscoutServer(api_secret=TEST_SECRET) as server:
        server.fail_next(1, status=503)
        env = {
            "PHLO_HOME": str(tmp_path / "home"),
            "NIGHTSCOUT_URL": server.url,
            "NIGHTSCOUT_API_SECRET": TEST_SECRET,
            "HTTP_BACKOFF_SECONDS": "0.01",
        }
        run = phlo("materialize", "dlt_glucose_entries", "--partition", "2024-01-15", env=env)
    assert run.returncode == 0, run.stderr
    [retry] = [line for line in run.stderr.splitlines() if "retrying request" in line]
    assert "warning dlt_glucose_entries: retrying request source=Nightscout" in retry
    assert "attempt=1" in retry and "wait_seconds=" in retry and 'reason="HTTP 503"' in retry


@pytest.mark.parametrize(
    ("line", "expected"),
    [("phlo mat", {"materialize"}), ("phlo backfill --par", {"--partitions", "--parallel"})],
)
def test_bash_completes_commands_and_options(line: str, expected: set[str]) -> None:
    words = line.split()
    script = (
        f"source <({PHLO} completion bash); COMP_WORDS=({line}); "
        f"COMP_CWORD={len(words) - 1}; COMP_LINE='{line}'; COMP_POINT={len(line)}; "
        '_phlo; echo "${COMPREPLY[@]}"'
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert set(done.stdout.split()) == expected, done.stderr


def test_a_home_that_is_a_file_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "home").write_text("")
    result = phlo("query", "select 1", env={"PHLO_HOME": str(tmp_path / "home")})
    assert result.returncode == 2
    assert f"PHLO_HOME={tmp_path / 'home'} is a file" in result.stderr


def test_a_bad_setting_names_the_variable(tmp_path: Path) -> None:
    result = phlo("query", "select 1", env={"PHLO_TIMEZONE": "Atlantis/Capital"})
    assert result.returncode == 2
    assert "PHLO_TIMEZONE" in result.stderr


def test_unknown_asset_lists_the_known_ones(tmp_path: Path) -> None:
    result = phlo(
        "materialize",
        "glucose_entries_typo",
        "--partition",
        "2024-01-15",
        env={"PHLO_HOME": str(tmp_path / "home")},
    )
    assert result.returncode == 2
    assert "unknown asset 'glucose_entries_typo' (did you mean " in result.stderr
    assert "'dlt_glucose_entries'" in result.stderr.split("?)")[0]
    assert "dlt_glucose_entries" in result.stderr


def test_instance_writes_dagster_yaml_and_leaves_a_users_own(tmp_path: Path) -> None:
    env = {"PHLO_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "dagster")}
    result = phlo("instance", env=env)
    assert result.returncode == 0, result.stderr
    config = tmp_path / "dagster" / "dagster.yaml"
    assert result.stdout.strip() == str(config)
    assert config.stat().st_mode & 0o777 == 0o600
    assert "PooledSqliteEventLogStorage" in config.read_text()
    assert (tmp_path / "dagster" / "history" / "runs.db").exists(), "the storage is created"

    own = "".join(config.read_text().splitlines(keepends=True)[1:])  # phlo's first line gone
    config.write_text(own)
    again = phlo("instance", env=env)
    assert again.returncode == 0 and "left as it is" in again.stderr
    assert config.read_text() == own


def test_materialize_then_query_in_every_format(tmp_path: Path) -> None:
    with SampleNightscoutServer(timezone="Europe/Oslo", api_secret=TEST_SECRET) as server:
        env = {
            "PHLO_HOME": str(tmp_path / "home"),
            "PHLO_TIMEZONE": "Europe/Oslo",
            "NIGHTSCOUT_URL": server.url,
            "NIGHTSCOUT_API_SECRET": TEST_SECRET,
        }
        run = phlo("materialize", "dlt_glucose_entries+", "--partition", "2024-01-15", env=env)
        assert run.returncode == 0, run.stderr
        assert "succeeded: 14 asset(s) for 2024-01-15" in run.stdout
        assert "materialized fct_daily_glucose_metrics" in run.stderr
        assert re.search(r"dlt_glucose_entries: 2\d\d readings loaded, 0 rejected", run.stdout)
        mart = phlo("materialize", "mrt_glucose_overview", env=env)  # unpartitioned: no day
        assert mart.returncode == 0, mart.stderr
        assert "succeeded: 1 asset(s) (rebuilt whole)" in mart.stdout

    sql = "select reading_date, reading_count, tir_pct from silver.fct_daily_glucose_metrics"
    as_json = phlo("query", sql, "--format", "json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)
    assert len(rows) == 1
    assert rows[0]["reading_date"] == "2024-01-15"
    assert 250 < rows[0]["reading_count"] <= 288
    assert set(rows[0]) == {"reading_date", "reading_count", "tir_pct"}

    as_csv = phlo("query", sql, "--format", "csv", env=env)
    header, line = as_csv.stdout.strip().splitlines()
    assert header == "reading_date,reading_count,tir_pct"
    assert line.startswith(f"2024-01-15,{rows[0]['reading_count']},")

    as_table = phlo("query", sql, env=env)
    assert "reading_date" in as_table.stdout.splitlines()[0]
    assert as_table.stdout.strip().endswith("(1 row)")

    bad_sql = phlo("query", "select * from silver.no_such_table", env=env)
    assert bad_sql.returncode == 2
    assert "no_such_table" in bad_sql.stderr


@pytest.mark.parametrize("variable", ["NIGHTSCOUT_API_SECRET", "NIGHTSCOUT_TOKEN"])
def test_rejected_credentials_fail_the_run_without_showing_them(
    variable: str, tmp_path: Path
) -> None:
    wrong = "wrong-credential-value-123"
    with SampleNightscoutServer(api_secret=TEST_SECRET, token="right-token") as server:
        result = phlo(
            "materialize",
            "dlt_glucose_entries",
            "--partition",
            "2024-01-15",
            "--verbose",
            env={
                "PHLO_HOME": str(tmp_path / "home"),
                "NIGHTSCOUT_URL": server.url,
                variable: wrong,
            },
        )
    assert result.returncode == 1
    assert "rejected the credentials" in result.stderr
    output = result.stdout + result.stderr
    assert wrong not in output
    assert hashlib.sha1(wrong.encode()).hexdigest() not in output
    # Nowhere in the run's record either: event log, compute logs, what `phlo logs` shows.
    stored = [f for f in (tmp_path / "home" / "dagster").rglob("*") if f.is_file()]
    assert any(f.suffix == ".db" for f in stored)
    for path in stored:
        assert wrong.encode() not in path.read_bytes(), path
    logs = phlo("logs", "--json", "--full", env={"PHLO_HOME": str(tmp_path / "home")})
    assert logs.returncode == 0 and "rejected the credentials" in logs.stdout
    assert wrong not in logs.stdout


def test_demo_runs_14_sample_days_apart_from_real_data(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = phlo("demo", env={"PHLO_HOME": str(home)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "SAMPLE DATA" in result.stderr
    assert "succeeded: 14 asset(s) for 2024-01-01..2024-01-14" in result.stdout
    # One run per location, each after the locations it reads: no mart before its inputs.
    started = re.findall(r"^(\w+): materializing", result.stderr, re.MULTILINE)
    assert started == ["nightscout", "weather", "insights"], result.stderr
    assert "failed check" not in result.stderr, result.stderr
    sections = result.stdout.split("\n== ")
    daily = next(s for s in sections if "Daily glucose metrics [SAMPLE DATA]" in s)
    hourly = next(s for s in sections if "Hourly glucose profile" in s)
    assert "(14 rows)" in daily
    assert "(24 rows)" in hourly
    risk = next(s for s in sections if "Glycemia Risk Index and episodes" in s)
    assert "(14 rows)" in risk
    report = home / "demo" / "reports" / "glucose.html"
    assert "reports/glucose.html (any window: " in result.stdout
    assert "SAMPLE DATA" in report.read_text()
    # Every location of the workspace: weather for two places, and the mart across domains.
    assert "weather: succeeded: 6 asset(s) for 2024-01-01..2024-01-14" in result.stdout
    assert "672 hourly observations loaded for 2 place(s), 0 rejected" in result.stdout
    assert "insights: succeeded: 2 asset(s) (rebuilt whole)" in result.stdout
    weather = next(s for s in sections if "Daily weather [SAMPLE DATA]" in s)
    assert "(28 rows)" in weather
    both = next(s for s in sections if "Glucose beside the weather (berlin)" in s)
    assert "(14 rows)" in both
    rows = both.split("(14 rows)")[0].strip().splitlines()[3:]
    assert [row.split()[0] for row in rows][::13] == ["2024-01-01", "2024-01-14"]
    assert not [row for row in rows if "null" in row.split()], "weather beside every day"
    assert (home / "demo" / "lake" / "catalog.sqlite").exists()
    assert not (home / "lake").exists(), "sample data stays out of the real lakehouse"
    # Described in the catalog, whose lineage of the mart across domains reaches both APIs.
    # (The edges' exact set is test_catalog's, against the manifests.)
    assert re.search(r"^catalog: 21 datasets, \d+ lineage edges", result.stdout, re.MULTILINE)
    trace = next(line for line in result.stdout.splitlines() if line.startswith("trace it:"))
    assert trace.endswith("catalog lineage marts.mrt_glucose_weather_daily --upstream")
    lineage = phlo(
        "catalog",
        "lineage",
        "marts.mrt_glucose_weather_daily",
        "--upstream",
        "--json",
        env={"PHLO_HOME": str(home / "demo")},
    )

    def leaves(node: dict[str, Any]) -> set[str]:
        return {x for c in node["children"] for x in leaves(c)} or {node["name"]}

    assert leaves(json.loads(lineage.stdout)) == {"api/v1/entries", "v1/archive", "v1/forecast"}
    rerun = phlo("demo", env={"PHLO_HOME": str(home)}, cwd=tmp_path)

    def tables(stdout: str) -> str:
        return stdout.split("\n== ", 1)[1].split("\ndemo finished")[0]

    assert tables(rerun.stdout) == tables(result.stdout), "the demo is deterministic"


def test_parallel_is_capped_at_two_workers_a_core_and_says_so(tmp_path: Path) -> None:
    result = phlo(
        "backfill",
        "dlt_glucose_entries",
        "--start-date",
        "2024-01-01",
        "--end-date",
        "2024-12-31",
        "--parallel",
        "1000",
        "--dry-run",
        env={"PHLO_HOME": str(tmp_path / "h"), "NIGHTSCOUT_URL": "http://127.0.0.1:9"},
    )
    assert result.returncode == 0, result.stderr
    most = 2 * len(os.sched_getaffinity(0))
    assert f"--parallel 1000 lowered to {most}" in result.stderr
    assert f" {most} worker(s)" in result.stdout


def dagster_processes(marker: str) -> list[int]:
    """Pids of processes whose command line or environment names `marker` (the test's home)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            seen = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in seen:
            found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_ui_serves_every_location_and_ctrl_c_ends_every_process(tmp_path: Path) -> None:
    from phlo_core.services.layout import free_port
    from phlo_core.workspace import DEFAULT_WORKSPACE
    from tests.e2e.test_pex_deploy import LOCATIONS, gql, loaded, locations_of

    home = tmp_path / "ui-home"
    port = free_port()
    ui = subprocess.Popen(
        [PHLO, "ui", "--demo", "--port", str(port)],
        env={**os.environ, "PHLO_HOME": str(home)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/graphql"
        deadline = time.monotonic() + 300
        entries: list[dict] = []
        while time.monotonic() < deadline and ui.poll() is None:
            try:
                entries = gql(url, LOCATIONS)["workspaceOrError"]["locationEntries"]
            except (urllib.error.URLError, ConnectionError):
                entries = []
            if entries and all(loaded(entry) for entry in entries):
                break
            time.sleep(2)
        assert {e["name"] for e in entries if loaded(e)} == set(locations_of(DEFAULT_WORKSPACE))
        assert (home / "demo" / "dagster" / "dagster.yaml").exists(), "the demo's instance"
        assert dagster_processes(str(home)), "webserver, daemon and code servers run"
    finally:
        ui.send_signal(signal.SIGINT)
        code = ui.wait(timeout=60)
    assert code == 0, ui.stderr.read() if ui.stderr else ""
    assert "UI stopped" in (ui.stderr.read() if ui.stderr else "")
    deadline = time.monotonic() + 10
    while dagster_processes(str(home)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert dagster_processes(str(home)) == [], "every process of the UI ended"
