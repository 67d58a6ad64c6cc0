"""The nightscout code location loads as Dagster sees it: assets, checks, jobs, schedule."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from dagster import AssetKey, build_schedule_context

from phlo_core.resources import run_settings
from phlo_core.settings import PhloSettings
from phlo_core.workspace import load_definitions, location_ref, location_refs

MODELS = {
    "stg_glucose_entries",
    "fct_glucose_readings",
    "fct_daily_glucose_metrics",
    "mrt_glucose_readings",
    "mrt_glucose_hourly_patterns",
    "mrt_glucose_overview",
    "mrt_glucose_risk_daily",
    "mrt_glucose_episodes",
    "mrt_glucose_episodes_daily",
    "mrt_glucose_report_window",
    "mrt_glucose_report_profile",
}
MARTS = {name for name in MODELS if name.startswith("mrt_") and name != "mrt_glucose_readings"}


def test_the_location_defines_every_asset_and_its_checks(
    make_settings: Callable[..., PhloSettings],
) -> None:
    settings = make_settings(phlo_timezone="Europe/Oslo")
    ref = location_ref(settings, "nightscout")
    defs = load_definitions(ref, settings)
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {
        "dlt_glucose_entries",
        "nightscout_published_marts",
        "glucose_agp_report",
    } | MODELS
    # Published after every mart is built, and only then.
    assert graph.get(AssetKey("nightscout_published_marts")).parent_keys == {
        AssetKey(name) for name in MARTS
    }
    checks_by_asset: dict[str, int] = {}
    for check in graph.asset_check_keys:
        name = check.asset_key.to_user_string()
        checks_by_asset[name] = checks_by_asset.get(name, 0) + 1
    assert set(checks_by_asset) == {"dlt_glucose_entries"} | MODELS  # every model is tested
    assert graph.get(AssetKey("stg_glucose_entries")).parent_keys == {
        AssetKey("dlt_glucose_entries")
    }

    assert defs.resolve_job_def("glucose_pipeline").name == "glucose_pipeline"
    schedule = defs.resolve_schedule_def("glucose_pipeline_schedule")
    midnight_past = dt.datetime(2024, 3, 10, 1, 15, tzinfo=settings.timezone)
    [request] = list(
        schedule.evaluate_tick(
            build_schedule_context(
                scheduled_execution_time=midnight_past, repository_def=defs.get_repository_def()
            )
        ).run_requests
        or []
    )
    assert request.partition_key == "2024-03-09"


def test_the_lakehouse_location_runs_maintenance_nightly(
    make_settings: Callable[..., PhloSettings],
) -> None:
    from dagster import DagsterInstance

    from phlo_core.lakehouse.writes import PartitionWrite, replace_partitions

    settings = make_settings()
    ref = location_ref(settings, "lakehouse")
    defs = load_definitions(ref, settings)
    schedule = defs.resolve_schedule_def("lakehouse_maintenance_schedule")
    assert schedule.cron_schedule == "30 3 * * *"
    import pyarrow as pa

    day = dt.date(2024, 1, 15)
    write = PartitionWrite(
        "raw.values",
        {"day": "date"},
        "day",
        day,
        day + dt.timedelta(days=1),
        pa.table({"day": [day]}),
    )
    replace_partitions([write], settings)
    job = defs.resolve_job_def("lakehouse_maintenance")
    with run_settings(settings):  # as phlo runs it; Dagster's own runs: the environment's
        result = job.execute_in_process(instance=DagsterInstance.ephemeral())
    assert result.success


def test_a_truncated_manifest_is_parsed_again(make_settings: Callable[..., PhloSettings]) -> None:
    """A kill while an older version wrote manifest.json left half a file, and every later run
    failed on it until it was deleted by hand."""
    import json

    from phlo_core.dbt.project import prepare_project
    from phlo_core.workspace import REPO_ROOT

    settings = make_settings()
    project = REPO_ROOT / "src" / "dbt" / "nightscout"
    manifest = prepare_project(project, settings)
    manifest.write_text(manifest.read_text()[:5000])
    assert prepare_project(project, settings) == manifest
    assert "nodes" in json.loads(manifest.read_text())
    assert not list(manifest.parent.glob(".parse-*")), "no scratch folder left"


def test_the_instance_file_follows_phlo_unless_it_is_the_users(
    make_settings: Callable[..., PhloSettings],
) -> None:
    """A dagster.yaml an older phlo wrote is brought up to date; one of the user's is kept."""
    from phlo_core.runs.event_storage import PooledSqliteEventLogStorage
    from phlo_core.runs.instance import TEMPLATE, instance_for

    settings = make_settings()
    config = settings.resolved_dagster_home / "dagster.yaml"
    instance = instance_for(settings)
    assert config.read_text().startswith(TEMPLATE.read_text())
    assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
    older = TEMPLATE.read_text().split("python_logs:")[0]
    config.write_text(older)
    instance_for(settings)
    assert "managed_python_loggers" in config.read_text()
    # Before its first line stopped calling every file "the embedded default".
    config.write_text("# Instance settings for the embedded default (SQLite storage under X).\n")
    instance_for(settings)
    assert config.read_text().startswith(TEMPLATE.read_text())
    own = "telemetry:\n  enabled: false\n"
    config.write_text(own)
    instance_for(settings)
    assert config.read_text() == own


def test_every_check_has_a_description(make_settings: Callable[..., PhloSettings]) -> None:
    """Dagster's UI showed "No description provided" for every dbt test: a singular test
    carries its schema.yml description, a generic one what it tests."""
    settings = make_settings()
    described: dict[str, str] = {}
    for name in ("nightscout", "insights"):
        graph = load_definitions(location_ref(settings, name), settings).resolve_asset_graph()
        for assets in graph.assets_defs:
            for spec in assets.check_specs:
                described[f"{spec.asset_key.to_user_string()}:{spec.name}"] = spec.description or ""
    assert described and all(described.values()), [k for k, v in described.items() if not v]
    weather = described["mrt_glucose_weather_daily:assert_some_days_have_weather"]
    assert weather.startswith("Warns when no glucose day has weather")
    assert described["stg_glucose_entries:unique_stg_glucose_entries_entry_id"] == (
        "unique: entry_id"
    )


def test_definitions_hold_the_calendar_and_no_other_setting(
    make_settings: Callable[..., PhloSettings],
) -> None:
    """Every location's jobs are the same, snapshot for snapshot, for settings that differ in
    everything but the calendar (sources, credentials, limits, places, the publish target):
    those reach a run through its resources, so no setting, and no secret, is in a job's
    snapshot (which Dagster stores with every run)."""
    from dagster._serdes import serialize_value

    secret = "s3cr3t-in-no-snapshot"
    one = make_settings(
        nightscout_url="http://127.0.0.1:9/one",
        nightscout_api_secret=secret,
        nightscout_reading_interval_minutes=15,
        nightscout_max_rejected_pct=40,
        weather_places="oslo=59.91,10.75",
        weather_max_rejected_pct=30,
        insights_weather_place="oslo",
        phlo_max_shrink_pct=10,
        phlo_publish_postgres_url="postgresql://u:pw-in-no-snapshot@127.0.0.1:9/db",
    )
    other = make_settings(nightscout_url="http://127.0.0.1:9/other")
    for ref in location_refs(one):
        snapshots = []
        for settings in (one, other):
            defs = load_definitions(ref, settings)
            jobs = sorted(defs.resolve_all_job_defs(), key=lambda job: job.name)
            snapshots.append([serialize_value(job.get_job_snapshot()) for job in jobs])
        assert snapshots[0] == snapshots[1], ref.name
        text = "".join(snapshots[0])
        for value in (secret, "pw-in-no-snapshot", "/one", "oslo", "59.91"):
            assert value not in text, (ref.name, value)
