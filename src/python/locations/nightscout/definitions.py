"""Dagster code location `nightscout`: Nightscout CGM glucose, from API to marts."""

from __future__ import annotations

from dagster import (
    AssetSelection,
    Definitions,
    define_asset_job,
    definitions,
    in_process_executor,
)

from locations.nightscout.assets import ASSET_NAME, SOURCE, build_ingestion_asset
from locations.nightscout.client import NightscoutConfigError, NightscoutSource, configured_url
from locations.nightscout.settings import nightscout_settings
from phlo_core.dbt.assets import build_dbt_assets
from phlo_core.partitions import daily_schedule
from phlo_core.resources import default_resources
from phlo_core.settings import PhloSettings, SettingsError, get_settings
from phlo_core.workspace import DBT_ROOT

DBT_PROJECT_DIR = DBT_ROOT / "nightscout"


def dbt_vars(settings: PhloSettings) -> dict[str, int]:
    """The models' vars of the run's settings."""
    interval = nightscout_settings(settings).nightscout_reading_interval_minutes
    return {"reading_interval_minutes": interval}


def build_definitions(settings: PhloSettings | None = None) -> Definitions:
    """The location's definitions on the calendar of `settings` (default: the environment's);
    every other setting reaches a run through its resources."""
    settings = settings or get_settings()
    ingestion = build_ingestion_asset(settings)
    models = build_dbt_assets(DBT_PROJECT_DIR, settings, group_name="nightscout", run_vars=dbt_vars)
    daily_job = define_asset_job(
        "glucose_pipeline",
        selection=AssetSelection.groups("nightscout"),
        description="Ingest a day of Nightscout entries and build every glucose model on it.",
    )
    nightly = daily_schedule(daily_job.name, settings)
    return Definitions(
        schedules=[nightly],
        assets=[ingestion, *models],
        jobs=[daily_job],
        resources={**default_resources(), SOURCE: NightscoutSource()},
        # Runs launched from the UI or a schedule: one process, as `phlo materialize` does
        # (the multiprocess executor re-imports everything per step: 8-11 s a run here).
        executor=in_process_executor,
    )


def preflight(settings: PhloSettings, asset_names: list[str]) -> None:
    """Before a run: the ingestion needs NIGHTSCOUT_URL (a usage error, not a failed run)."""
    if ASSET_NAME in asset_names:
        try:
            configured_url(nightscout_settings(settings))
        except NightscoutConfigError as exc:
            raise SettingsError(str(exc)) from None


@definitions
def defs() -> Definitions:
    """Loaded lazily, so that importing the module builds nothing (settings may change first)."""
    return build_definitions()
