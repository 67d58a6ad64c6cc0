"""Dagster code location `nightscout`: Nightscout CGM glucose, from API to marts."""

from __future__ import annotations

from dagster import Definitions, definitions

from locations.nightscout.assets import ASSET_NAME, SOURCE, build_ingestion_asset
from locations.nightscout.client import NightscoutConfigError, NightscoutSource, configured_url
from locations.nightscout.report import GLUCOSE_REPORT
from locations.nightscout.settings import nightscout_settings
from phlo_core.location import location_definitions
from phlo_core.settings import PhloSettings, SettingsError


def dbt_vars(settings: PhloSettings) -> dict[str, int]:
    """The models' vars of the run's settings."""
    interval = nightscout_settings(settings).nightscout_reading_interval_minutes
    return {"reading_interval_minutes": interval}


def build_definitions(settings: PhloSettings | None = None) -> Definitions:
    """The location's definitions on the calendar of `settings` (default: the environment's);
    every other setting reaches a run through its resources."""
    return location_definitions(
        settings,
        group="nightscout",
        job_name="glucose_pipeline",
        job_description="Ingest a day of Nightscout entries and build every glucose model on it.",
        ingestion=build_ingestion_asset,
        dbt_project="nightscout",
        dbt_vars=dbt_vars,
        resources={SOURCE: NightscoutSource()},
        reports=[GLUCOSE_REPORT],
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
