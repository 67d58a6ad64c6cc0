"""The production profile on real servers: DuckLake with its catalog in PostgreSQL and its
Parquet files in an S3 bucket, Dagster's runs and events in PostgreSQL, marts published to
PostgreSQL. The servers are the session's (`services` in conftest): a real PostgreSQL 15 and
a real SeaweedFS S3 server, fresh per test session.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from locations.nightscout.sample_server import SampleNightscoutServer
from phlo_core.calendar import parse_day_range
from phlo_core.lakehouse.connect import query
from phlo_core.runs.engine import materialize
from phlo_core.settings import PhloSettings, load_settings
from tests.conftest import TEST_SECRET
from tests.containers import Servers
from tests.e2e.helpers import assert_same_entries, expected_daily_metrics, served_readings

PHLO = str(Path(sys.executable).with_name("phlo"))
ZONE = "America/New_York"
DAYS = parse_day_range("2024-03-09..2024-03-11")
DAILY_TABLES = {
    "raw.glucose_entries": "partition_date",
    "bronze.stg_glucose_entries": "reading_date",
    "silver.fct_glucose_readings": "reading_date",
    "silver.fct_daily_glucose_metrics": "reading_date",
    "gold.mrt_glucose_readings": "reading_date",
}
# Files phlo writes on purpose with credentials in them (owner-only): never logs or output.
CONFIG_FILES = {"services.env", "state.json", "s3.json", "dagster.yaml", "profiles.yml"}


@pytest.fixture(scope="module")
def server() -> Iterator[SampleNightscoutServer]:
    with SampleNightscoutServer(timezone=ZONE, api_secret=TEST_SECRET) as s:
        yield s


def as_settings(
    home: Path, profile: dict[str, str], server: SampleNightscoutServer
) -> PhloSettings:
    return load_settings(
        phlo_home=home,
        phlo_timezone=ZONE,
        nightscout_url=server.url,
        nightscout_api_secret=TEST_SECRET,
        **{key.lower(): value for key, value in profile.items()},
    )


def environment(home: Path, profile: dict[str, str], server: SampleNightscoutServer) -> dict:
    return {
        **os.environ,
        **profile,
        "PHLO_HOME": str(home),
        "PHLO_TIMEZONE": ZONE,
        "NIGHTSCOUT_URL": server.url,
        "NIGHTSCOUT_API_SECRET": TEST_SECRET,
    }


def pg(url: str, sql: str, params: list[Any] | None = None) -> list[tuple]:
    import psycopg2

    con = psycopg2.connect(url)
    try:
        with con.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        con.close()


def catalog_url(profile: dict[str, str]) -> str:
    """The catalog database as a URL (same role and server as Dagster's)."""
    dagster = profile["PHLO_DAGSTER_POSTGRES_URL"]
    database = profile["PHLO_LAKE_CATALOG"].split("dbname=", 1)[1].split()[0]
    return dagster.rsplit("/", 1)[0] + "/" + database


def s3_keys(profile: dict[str, str], under: str | None = None) -> list[str]:
    """The bucket's keys under the lake's prefix (or `under`)."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=profile["PHLO_S3_ENDPOINT"],
        aws_access_key_id=profile["PHLO_S3_ACCESS_KEY_ID"],
        aws_secret_access_key=profile["PHLO_S3_SECRET_ACCESS_KEY"],
        region_name=profile["PHLO_S3_REGION"],
    )
    bucket, _, prefix = profile["PHLO_LAKE_DATA_PATH"].removeprefix("s3://").partition("/")
    prefix = prefix if under is None else under
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys


def secrets_of(profile: dict[str, str]) -> list[str]:
    from phlo_core.redact import dsn_password

    found = [
        profile["PHLO_S3_SECRET_ACCESS_KEY"],
        dsn_password(profile["PHLO_LAKE_CATALOG"]),
        dsn_password(profile["PHLO_DAGSTER_POSTGRES_URL"]),
    ]
    return [secret for secret in found if secret]


def assert_no_secret_written(profile: dict[str, str], home: Path, *texts: str) -> None:
    """No secret in any file under the home but the owner-only config files, in Dagster's
    event log, or in the texts (a command's output)."""
    secrets = secrets_of(profile)
    for path in home.rglob("*"):
        if path.is_file() and path.name not in CONFIG_FILES:
            content = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in content, f"a secret is in {path}"
    events = pg(profile["PHLO_DAGSTER_POSTGRES_URL"], "select event from event_logs")
    assert events, "Dagster's events are in PostgreSQL"
    for (event,) in events:
        for secret in secrets:
            assert secret not in event
    for text in texts:
        for secret in secrets:
            assert secret not in text


@pytest.fixture(scope="module")
def built(
    services: Servers,
    server: SampleNightscoutServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[PhloSettings, dict[str, str]]:
    """Three days through every layer on a fresh production profile, in one range run."""
    profile = services.provision(f"built{os.getpid()}")
    settings = as_settings(tmp_path_factory.mktemp("prod") / "home", profile, server)
    outcomes = materialize("dlt_glucose_entries+", DAYS, settings)
    assert outcomes and all(o.success for o in outcomes), [o.errors for o in outcomes]
    return settings, profile


def test_the_pipeline_runs_on_postgres_and_s3(
    built: tuple[PhloSettings, dict[str, str]], server: SampleNightscoutServer
) -> None:
    settings, profile = built
    secret_sha1 = hashlib.sha1(TEST_SECRET.encode()).hexdigest()
    result = query("select * from silver.fct_daily_glucose_metrics order by reading_date", settings)
    rows = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
    assert [r["reading_date"] for r in rows] == list(DAYS.days())
    for row in rows:
        day = row["reading_date"]
        values = list(served_readings(server.url, secret_sha1, day, settings.timezone).values())
        for name, value in expected_daily_metrics(values, day, settings.timezone).items():
            if value is None:
                assert row[name] is None, name
            else:
                assert row[name] == pytest.approx(value, abs=0.006), (day, name)

    # The Parquet files are in the bucket under the profile's prefix, none on local disk.
    keys = s3_keys(profile)
    prefix = profile["PHLO_LAKE_DATA_PATH"].removeprefix("s3://lake/")
    for table in ("raw/glucose_entries/", "silver/fct_glucose_readings/", "marts/"):
        assert any(k.startswith(prefix + table) and k.endswith(".parquet") for k in keys), table
    assert not (settings.home / "lake").exists()

    # The catalog is in PostgreSQL: DuckLake's own tables name the lake's tables.
    tables = {name for (name,) in pg(catalog_url(profile), "select table_name from ducklake_table")}
    assert {"glucose_entries", "fct_daily_glucose_metrics", "mrt_glucose_overview"} <= tables

    # Dagster's run and its events are in PostgreSQL.
    dagster = profile["PHLO_DAGSTER_POSTGRES_URL"]
    runs = pg(dagster, "select run_id, status from runs where pipeline_name = 'glucose_pipeline'")
    assert [status for _, status in runs] == ["SUCCESS"]
    assert pg(dagster, "select count(*) from runs where status <> 'SUCCESS'") == [(0,)]
    materialized = pg(
        dagster,
        "select count(*) from event_logs where run_id = %s and "
        "dagster_event_type = 'ASSET_MATERIALIZATION'",
        [runs[0][0]],
    )
    assert materialized[0][0] >= 3 * 5  # five daily assets for each of the three days

    # The marts are published, types kept, rows equal to the lake's.
    published = profile["PHLO_PUBLISH_POSTGRES_URL"]
    lake_rows = query("select * from marts.mrt_glucose_overview order by reading_date", settings)
    pg_rows = pg(published, "select * from marts.mrt_glucose_overview order by reading_date")
    assert pg_rows == lake_rows.rows and len(pg_rows) == 3
    types = dict(
        pg(
            published,
            "select column_name, data_type from information_schema.columns "
            "where table_schema = 'marts' and table_name = 'mrt_glucose_overview'",
        )
    )
    assert types["reading_date"] == "date"
    assert types["reading_count"] == "bigint"
    assert types["tir_pct"] == "double precision"
    hourly = pg(published, "select count(*) from marts.mrt_glucose_hourly_patterns")
    assert hourly == [(24,)]

    assert_no_secret_written(profile, settings.home)


def test_phlo_logs_reads_the_postgres_instance(
    built: tuple[PhloSettings, dict[str, str]], server: SampleNightscoutServer
) -> None:
    import json

    settings, profile = built
    env = environment(settings.home, profile, server)
    done = subprocess.run(
        [PHLO, "logs", "--asset", "dlt_glucose_entries", "--json", "--limit", "500"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stdout.splitlines()]
    kinds = {entry["event_type"] for entry in entries}
    assert "ASSET_MATERIALIZATION" in kinds
    assert {entry["asset"] for entry in entries if entry["asset"]} == {"dlt_glucose_entries"}
    errors = subprocess.run(
        [PHLO, "logs", "--level", "ERROR"], env=env, capture_output=True, text=True, timeout=120
    )
    assert errors.returncode == 0 and errors.stdout == "", errors.stderr


def test_follow_prints_a_run_started_after_it_on_postgres(
    built: tuple[PhloSettings, dict[str, str]], server: SampleNightscoutServer
) -> None:
    settings, profile = built
    follower = subprocess.Popen(
        [PHLO, "logs", "--follow", "--job", "glucose_pipeline", "--limit", "1"],
        env=environment(settings.home, profile, server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        first = follower.stdout.readline()  # the newest entry so far: the follower is reading
        assert "glucose_pipeline" in first, first
        [later] = materialize("dlt_glucose_entries", parse_day_range("2024-03-10"), settings)
        deadline = time.monotonic() + 60
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = follower.stdout.readline()
            seen.append(line)
            if later.run_id[:8] in line and "Finished execution" in line:
                break
        assert any(later.run_id[:8] in line and "Finished" in line for line in seen), seen
        assert len([x for x in seen if "Started execution" in x]) == 1, "each entry once"
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=30)
    assert follower.returncode == 0, follower.stderr.read() if follower.stderr else ""


def test_logs_read_with_sql_equal_logs_read_through_dagster(
    built: tuple[PhloSettings, dict[str, str]],
) -> None:
    """phlo's own dagster.yaml on PostgreSQL is read with plain SQL (no Dagster import); any
    other through Dagster's storage classes. Same instance, same entries, whatever the filter."""

    from phlo_core.runlogs.model import LEVELS, LogFilter
    from phlo_core.runlogs.read import read_entries
    from phlo_core.runlogs.stores import InstanceStorage, PostgresTables, open_logs
    from phlo_core.runs.instance import instance_for

    settings, _ = built
    tables = open_logs(settings)
    assert isinstance(tables, PostgresTables)
    storage = InstanceStorage(instance_for(settings))
    assert_same_entries(tables, storage, read_entries(tables, LogFilter(limit=1))[0].run_id)
    # The level read from the text (PostgreSQL) against the level of every entry.
    every = read_entries(tables, LogFilter(limit=100_000))
    for level in (LEVELS["INFO"], LEVELS["WARNING"], LEVELS["ERROR"]):
        at_least = read_entries(tables, LogFilter(level=level, limit=100_000))
        assert at_least == [e for e in every if e.level >= level], level
    assert tables.has_asset("dlt_glucose_entries") and not tables.has_asset("nope")


def run_phlo(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PHLO, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_four_processes_on_different_days_write_every_row_once(
    production_profile: Callable[[], dict[str, str]],
    server: SampleNightscoutServer,
    tmp_path: Path,
) -> None:
    profile = production_profile()
    home = tmp_path / "home"
    env = environment(home, profile, server)
    days = ["2024-03-08", "2024-03-09", "2024-03-10", "2024-03-11"]
    processes = [
        subprocess.Popen(
            [PHLO, "materialize", "dlt_glucose_entries", "--partition", day],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for day in days
    ]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in processes]
    assert [code for code, _ in results] == [0, 0, 0, 0], [err for _, err in results]
    settings = as_settings(home, profile, server)
    secret_sha1 = hashlib.sha1(TEST_SECRET.encode()).hexdigest()
    for day in days:
        served = served_readings(
            server.url, secret_sha1, parse_day_range(day).start, settings.timezone
        )
        stored = query(
            "select reading_at_ms, sgv from raw.glucose_entries "
            f"where partition_date = '{day}' order by reading_at_ms",
            settings,
        ).rows
        assert stored == sorted(served.items()), day


@pytest.mark.slow
def test_a_process_killed_mid_write_leaves_nothing_the_rerun_does_not_fix(
    production_profile: Callable[[], dict[str, str]],
    server: SampleNightscoutServer,
    built: tuple[PhloSettings, dict[str, str]],
    tmp_path: Path,
) -> None:
    profile = production_profile()
    home = tmp_path / "home"
    env = environment(home, profile, server)
    settings = as_settings(home, profile, server)
    victim = subprocess.Popen(
        [PHLO, "materialize", "dlt_glucose_entries+", "--partition", "2024-03-10"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert victim.stderr is not None
    for line in victim.stderr:
        if "running nightscout_dbt_models" in line:
            break
    time.sleep(1.0)  # inside dbt's writes of the day
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL

    again = run_phlo(env, "materialize", "dlt_glucose_entries+", "-p", "2024-03-10", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    # Every daily table holds the day exactly as the clean three-day build holds it.
    for table, column in DAILY_TABLES.items():
        sql = f"select * from {table} where {column} = '2024-03-10' order by all"
        rows = query(sql, settings).rows
        assert rows and rows == query(sql, built[0]).rows, table


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"PHLO_S3_SECRET_ACCESS_KEY": "not-the-right-secret-key"},
            "refused the lake's credentials",
        ),
        (
            {"PHLO_LAKE_DATA_PATH": "s3://no-such-bucket/ducklake/"},
            "bucket 'no-such-bucket' does not exist",
        ),
        ({"catalog_port": "1"}, "cannot open the lakehouse catalog"),
        ({"dagster_port": "1"}, "cannot connect to Dagster's PostgreSQL"),
    ],
)
def test_bad_storage_settings_are_one_line_errors_and_write_nothing(
    change: dict[str, str],
    expected: str,
    production_profile: Callable[[], dict[str, str]],
    server: SampleNightscoutServer,
    tmp_path: Path,
) -> None:
    profile = production_profile()
    good = dict(profile)
    bad = dict(profile)
    port = profile["PHLO_LAKE_CATALOG"].split("port=", 1)[1].split()[0]
    if "catalog_port" in change:
        bad["PHLO_LAKE_CATALOG"] = profile["PHLO_LAKE_CATALOG"].replace(f"port={port}", "port=1")
    elif "dagster_port" in change:
        bad["PHLO_DAGSTER_POSTGRES_URL"] = profile["PHLO_DAGSTER_POSTGRES_URL"].replace(
            f":{port}/", ":1/"
        )
    else:
        bad.update(change)
    home = tmp_path / "home"
    done = run_phlo(
        environment(home, bad, server),
        "materialize",
        "dlt_glucose_entries+",
        "-p",
        "2024-03-10",
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("phlo: error:")]
    assert len(errors) == 1 and expected in errors[0], done.stderr
    for secret in secrets_of(good) + secrets_of(bad):
        assert secret not in done.stderr + done.stdout
    # Nothing was written: no file in the bucket's prefix, no table in the catalog, no run.
    assert s3_keys(good) == []
    assert pg(catalog_url(good), "select count(*) from pg_tables where schemaname = 'public'") == [
        (0,)
    ]
    assert pg(
        good["PHLO_DAGSTER_POSTGRES_URL"],
        "select count(*) from pg_tables where schemaname = 'public'",
    ) == [(0,)]


def test_readers_never_see_a_published_mart_missing_or_partial(
    built: tuple[PhloSettings, dict[str, str]],
) -> None:
    import psycopg2

    from phlo_core.lakehouse.publish import publish

    settings, profile = built
    url = profile["PHLO_PUBLISH_POSTGRES_URL"]
    expected = pg(url, "select count(*), sum(reading_count) from marts.mrt_glucose_overview")
    seen: list[Any] = []
    failures: list[str] = []
    stop = threading.Event()

    def read() -> None:
        con = psycopg2.connect(url)
        con.autocommit = True
        try:
            while not stop.is_set():
                try:
                    with con.cursor() as cur:
                        cur.execute(
                            "select count(*), sum(reading_count) from marts.mrt_glucose_overview"
                        )
                        seen.append(cur.fetchall())
                except psycopg2.Error as exc:
                    failures.append(str(exc))
        finally:
            con.close()

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for _ in range(8):
            assert publish(["mrt_glucose_overview", "mrt_glucose_hourly_patterns"], settings) == {
                "mrt_glucose_overview": 3,
                "mrt_glucose_hourly_patterns": 24,
            }
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert failures == []
    assert len(seen) > 8 and all(result == expected for result in seen)
    staging = pg(
        url,
        "select count(*) from pg_tables where tablename ~ '^_phlo_stage_|__phlo_[0-9a-f]{8}$'",
    )
    assert staging == [(0,)]


def test_a_rejected_publishing_password_fails_the_step_without_recording_it(
    built: tuple[PhloSettings, dict[str, str]],
) -> None:
    from phlo_core.settings import with_overrides

    settings, profile = built
    url = profile["PHLO_PUBLISH_POSTGRES_URL"]
    wrong = "not-the-password-" + "x" * 8
    bad_url = url.replace(url.split("://", 1)[1].split("@")[0], f"phlo:{wrong}")
    bad = with_overrides(settings, phlo_publish_postgres_url=bad_url)
    before = pg(url, "select count(*), sum(reading_count) from marts.mrt_glucose_overview")
    [outcome] = materialize("nightscout_published_marts", DAYS, bad)
    assert not outcome.success
    assert any("password authentication failed" in error for error in outcome.errors)
    assert wrong not in " ".join(outcome.errors)
    events = pg(
        profile["PHLO_DAGSTER_POSTGRES_URL"],
        "select event from event_logs where run_id = %s",
        [outcome.run_id],
    )
    assert events and not any(wrong in event for (event,) in events)
    # The published tables are as they were.
    assert pg(url, "select count(*), sum(reading_count) from marts.mrt_glucose_overview") == before


def test_runs_launched_in_containers_get_their_settings_by_name(
    production_profile: Callable[[], dict[str, str]],
    server: SampleNightscoutServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PHLO_RUN_LAUNCHER=docker: dagster.yaml launches runs with Dagster's DockerRunLauncher
    (host network, labelled), names the settings the runs get and holds none of their values:
    Dagster puts the instance on a run container's command line, readable by every local
    user. phlo's own commands still open the instance, their settings read from elsewhere."""
    import yaml

    from phlo_core.runs.instance import instance_for, instance_label

    profile = production_profile()
    home = tmp_path / "home"
    docker_runs = {
        "PHLO_RUN_LAUNCHER": "docker",
        "PHLO_RUN_IMAGE": "phlo-phlo:test",
        "PHLO_DAGSTER_POSTGRES_URL": profile["PHLO_DAGSTER_POSTGRES_URL"].replace(
            "postgresql://", "postgresql+psycopg2://", 1
        ),
    }
    done = run_phlo({**environment(home, profile, server), **docker_runs}, "instance", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    written = (home / "dagster" / "dagster.yaml").read_text()
    config = yaml.safe_load(written)
    assert config["storage"] == {"postgres": {"postgres_url": {"env": "PHLO_DAGSTER_POSTGRES_URL"}}}
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    assert launcher["config"]["image"] == "phlo-phlo:test"
    assert launcher["config"]["container_kwargs"] == {
        "network_mode": "host",
        "labels": {"phlo.run": instance_label(profile["PHLO_DAGSTER_POSTGRES_URL"])},
    }
    names = set(launcher["config"]["env_vars"])
    assert {*profile, "NIGHTSCOUT_URL", "NIGHTSCOUT_API_SECRET", "PHLO_TIMEZONE"} <= names
    assert all("=" not in name for name in names) and "PATH" not in names
    for secret in [*secrets_of(profile), TEST_SECRET]:
        assert secret not in written + done.stdout + done.stderr

    # phlo's own commands read their settings from anywhere (here: given, none in the
    # environment) and open the same instance: the URL comes from their settings.
    for name in names:
        monkeypatch.delenv(name, raising=False)
    settings = as_settings(home, {**profile, **docker_runs}, server)
    instance = instance_for(settings)
    try:
        assert type(instance.run_launcher).__name__ == "DockerRunLauncher"
        assert instance.get_run_records(limit=1) == []
    finally:
        instance.dispose()
    # ... and leave the names as `phlo instance` wrote them: this process's environment is not
    # the daemon's.
    assert (home / "dagster" / "dagster.yaml").read_text() == written
    # `phlo instance` again, in another environment: the names follow it, as spelled there.
    fewer = {**environment(home, profile, server), **docker_runs}
    fewer["nightscout_url"] = fewer.pop("NIGHTSCOUT_URL")
    del fewer["NIGHTSCOUT_API_SECRET"]
    done = run_phlo(fewer, "instance", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    again = yaml.safe_load((home / "dagster" / "dagster.yaml").read_text())
    names_again = set(again["run_launcher"]["config"]["env_vars"])
    assert names_again == names - {"NIGHTSCOUT_URL", "NIGHTSCOUT_API_SECRET"} | {"nightscout_url"}


def test_the_production_instance_queues_runs_within_limits_phlo_status_shows(
    production_profile: Callable[[], dict[str, str]],
    server: SampleNightscoutServer,
    tmp_path: Path,
) -> None:
    """On PostgreSQL, Dagster's queued run coordinator with the settings' limits (per code
    location, per tag), which Dagster's own config schema accepts; `phlo status` and `phlo
    services status` show them with the runs waiting in the queue."""
    import yaml
    from dagster import DagsterRun
    from dagster._core.utils import make_new_run_id

    from phlo_core.runs.instance import instance_for

    profile = production_profile()
    home = tmp_path / "home"
    limits = {"PHLO_MAX_CONCURRENT_RUNS": "3", "PHLO_RUN_TAG_LIMITS": "phlo/backfill=*:1"}
    env = {**environment(home, profile, server), **limits}
    done = run_phlo(env, "instance", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load((home / "dagster" / "dagster.yaml").read_text())
    coordinator = config["run_coordinator"]
    assert coordinator["class"] == "QueuedRunCoordinator"
    assert coordinator["config"] == {
        "max_concurrent_runs": 3,
        "tag_concurrency_limits": [
            {
                "key": "dagster/code_location",
                "value": {"applyLimitPerUniqueValue": True},
                "limit": 2,
            },
            {"key": "phlo/backfill", "limit": 1, "value": {"applyLimitPerUniqueValue": True}},
        ],
    }
    settings = as_settings(home, {**profile, **limits}, server)
    instance = instance_for(settings)  # Dagster validates the file against its schema here
    try:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        queue = instance.run_coordinator
        assert queue.get_run_queue_config().max_concurrent_runs == 3  # pyright: ignore
        ids = []
        for status in ("QUEUED", "QUEUED", "STARTED"):
            run = DagsterRun(job_name="glucose_pipeline", run_id=make_new_run_id())
            instance.add_run(run)
            ids.append((run.run_id, status))
    finally:
        instance.dispose()
    # A run is queued by Dagster's webserver or daemon, from a code server's job (none here).
    import psycopg2

    with psycopg2.connect(profile["PHLO_DAGSTER_POSTGRES_URL"]) as con, con.cursor() as cur:
        for run_id, status in ids:
            cur.execute("update runs set status = %s where run_id = %s", [status, run_id])
    expected = (
        "runs: 2 queued, 1 in progress (Dagster's queue: at most 3 at once, 2 per code "
        "location, 1 per value of phlo/backfill)"
    )
    shown = run_phlo(env, "status", "glucose_entries", "--start-date", "2024-05-01", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().splitlines()[-1] == expected
    # The embedded default launches each run at once: no queue, no line.
    plain = run_phlo(
        environment(tmp_path / "plain", {}, server),
        "status",
        "--start-date",
        "2024-05-01",
        cwd=tmp_path,
    )
    assert plain.returncode == 0 and "Dagster's queue" not in plain.stdout, plain.stderr


def test_writers_on_a_postgres_catalog_lock_each_other_from_any_machine(
    production_profile: Callable[[], dict[str, str]],
    server: SampleNightscoutServer,
    tmp_path: Path,
) -> None:
    """The lakehouse's writer lock on a catalog in PostgreSQL is an advisory lock in its
    database, not a file of one machine: a process of another home (another machine: nothing
    shared but the catalog) waits for it, maintenance waits for a dbt build's shared hold, and a
    holder killed with SIGKILL leaves nothing held."""
    profile = production_profile()
    holder = textwrap.dedent(
        """
        import sys, time
        from phlo_core.lakehouse.locks import lakehouse_building, lakehouse_writer
        from phlo_core.settings import get_settings
        lock = lakehouse_writer if sys.argv[1] == "writer" else lakehouse_building
        with lock(get_settings()):
            print("held", flush=True)
            time.sleep(600)
        """
    )
    env = environment(tmp_path / "machine-a", profile, server)
    process = subprocess.Popen(
        [sys.executable, "-c", holder, "writer"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "held"
        from phlo_core.lakehouse.locks import (
            lakehouse_building,
            lakehouse_maintenance,
            lakehouse_writer,
        )

        held = "select count(*) from pg_locks where locktype = 'advisory' and granted"
        assert pg(catalog_url(profile), held) == [(1,)]  # in the catalog's database
        other = as_settings(tmp_path / "machine-b", profile, server)
        acquired = threading.Event()

        def take() -> None:
            with lakehouse_writer(other):
                acquired.set()

        waiter = threading.Thread(target=take, daemon=True)
        waiter.start()
        assert not acquired.wait(3), "a second home took the writer lock while it was held"
        with lakehouse_building(other):
            pass  # dbt's daily builds do not wait for writers
        process.kill()  # as a machine's process dies: PostgreSQL ends its session
        assert acquired.wait(30), "the lock of a killed holder was never released"
        waiter.join(5)
    finally:
        process.kill()
        process.wait()

    building = subprocess.Popen(
        [sys.executable, "-c", holder, "building"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert building.stdout is not None and building.stdout.readline().strip() == "held"
        done = threading.Event()

        def maintain() -> None:
            with lakehouse_maintenance(other):
                done.set()

        threading.Thread(target=maintain, daemon=True).start()
        assert not done.wait(3), "maintenance ran during another machine's dbt build"
        building.terminate()
        assert done.wait(30)
    finally:
        building.kill()
        building.wait()


def test_step_outputs_are_kept_in_the_bucket_beside_the_lake(
    production_profile: Callable[[], dict[str, str]],
    server: SampleNightscoutServer,
    tmp_path: Path,
) -> None:
    """A step on another machine reads what a step here wrote: outputs are pickled into the
    lake's bucket, outside the lake's own prefix (its maintenance deletes files its catalog does
    not know), and nothing lands under DAGSTER_HOME."""
    from dagster import AssetKey, build_input_context, build_output_context

    from phlo_core.runs.executor import StepOutputs

    profile = production_profile()
    settings = as_settings(tmp_path / "home", profile, server)
    outputs = StepOutputs(settings)
    written = build_output_context(asset_key=AssetKey(["daily_scores"]))
    outputs.handle_output(written, {"2024-05-01": 97.5})
    lake_prefix = profile["PHLO_LAKE_DATA_PATH"].removeprefix("s3://lake/")
    steps_prefix = lake_prefix.rstrip("/").rpartition("/")[0] + "/dagster-steps/"
    assert s3_keys(profile, under=steps_prefix) == [steps_prefix + "daily_scores"]
    assert not any(key.startswith(lake_prefix) for key in s3_keys(profile))
    elsewhere = StepOutputs(as_settings(tmp_path / "other-machine", profile, server))
    read = build_input_context(asset_key=AssetKey(["daily_scores"]), upstream_output=written)
    assert elsewhere.load_input(read) == {"2024-05-01": 97.5}
    assert not (tmp_path / "home" / "dagster" / "storage").exists()
