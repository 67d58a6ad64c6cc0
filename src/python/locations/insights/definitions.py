"""Dagster code location `insights`: marts that put domains side by side.

The domains never read each other (nightscout knows nothing of weather, nor weather of
glucose); this location reads both, so every dependency points one way: into it. Its models
read the other locations' tables as dbt sources mapped to their assets, so Dagster's lineage
crosses locations, and `phlo materialize dlt_weather_observations+` reaches its marts.
"""

from __future__ import annotations

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    Definitions,
    ScheduleDefinition,
    define_asset_job,
    definitions,
    in_process_executor,
)

from locations.insights.settings import insights_settings
from phlo_core.dbt.assets import build_dbt_assets
from phlo_core.resources import default_resources
from phlo_core.settings import PhloSettings, get_settings
from phlo_core.workspace import DBT_ROOT

DBT_PROJECT_DIR = DBT_ROOT / "insights"


def dbt_vars(settings: PhloSettings) -> dict[str, str]:
    """The models' vars of the run's settings."""
    return {"weather_place": insights_settings(settings).insights_weather_place}


def build_definitions(settings: PhloSettings | None = None) -> Definitions:
    """The location's definitions on the calendar of `settings` (default: the environment's);
    every other setting reaches a run through its resources."""
    settings = settings or get_settings()
    models = build_dbt_assets(DBT_PROJECT_DIR, settings, group_name="insights", run_vars=dbt_vars)
    job = define_asset_job(
        "insights_pipeline",
        selection=AssetSelection.groups("insights"),
        description="Rebuild the cross-domain marts from the domains' daily tables.",
    )
    # After the domains' nightly runs (01:15, 01:20): the mart reads what they wrote.
    nightly = ScheduleDefinition(
        name=f"{job.name}_schedule",
        job=job,
        cron_schedule="0 2 * * *",
        execution_timezone=settings.phlo_timezone,
        default_status=DefaultScheduleStatus.STOPPED,
        description="Every night, after the domains' pipelines: rebuild the cross-domain marts.",
    )
    return Definitions(
        assets=models,
        jobs=[job],
        schedules=[nightly],
        resources=default_resources(),
        executor=in_process_executor,
    )


@definitions
def defs() -> Definitions:
    """Loaded lazily, so that importing the module builds nothing (settings may change first)."""
    return build_definitions()
