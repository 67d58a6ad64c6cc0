"""Dagster code location `weather`: hourly Open-Meteo weather for WEATHER_PLACES, to marts."""

from __future__ import annotations

from dagster import (
    AssetSelection,
    Definitions,
    define_asset_job,
    definitions,
    in_process_executor,
)

from locations.weather.assets import SOURCE, build_ingestion_asset
from locations.weather.client import OpenMeteoSource
from phlo_core.dbt.assets import build_dbt_assets
from phlo_core.partitions import daily_schedule
from phlo_core.resources import default_resources
from phlo_core.settings import PhloSettings, get_settings
from phlo_core.workspace import DBT_ROOT

DBT_PROJECT_DIR = DBT_ROOT / "weather"


def build_definitions(settings: PhloSettings | None = None) -> Definitions:
    """The location's definitions on the calendar of `settings` (default: the environment's);
    every other setting reaches a run through its resources."""
    settings = settings or get_settings()
    ingestion = build_ingestion_asset(settings)
    models = build_dbt_assets(DBT_PROJECT_DIR, settings, group_name="weather")
    daily_job = define_asset_job(
        "weather_pipeline",
        selection=AssetSelection.groups("weather"),
        description="Ingest a day of hourly weather for every place and build the weather models.",
    )
    return Definitions(
        schedules=[daily_schedule(daily_job.name, settings, minute=20)],
        assets=[ingestion, *models],
        jobs=[daily_job],
        resources={**default_resources(), SOURCE: OpenMeteoSource()},
        executor=in_process_executor,
    )


@definitions
def defs() -> Definitions:
    """Loaded lazily, so that importing the module builds nothing (settings may change first)."""
    return build_definitions()
