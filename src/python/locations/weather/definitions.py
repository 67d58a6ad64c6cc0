"""Dagster code location `weather`: hourly Open-Meteo weather for WEATHER_PLACES, to marts."""

from __future__ import annotations

from dagster import Definitions, definitions

from locations.weather.assets import SOURCE, build_ingestion_asset
from locations.weather.client import OpenMeteoSource
from phlo_core.location import Nightly, location_definitions
from phlo_core.settings import PhloSettings


def build_definitions(settings: PhloSettings | None = None) -> Definitions:
    """The location's definitions on the calendar of `settings` (default: the environment's);
    every other setting reaches a run through its resources."""
    return location_definitions(
        settings,
        group="weather",
        job_name="weather_pipeline",
        job_description=(
            "Ingest a day of hourly weather for every place and build the weather models."
        ),
        ingestion=build_ingestion_asset,
        dbt_project="weather",
        resources={SOURCE: OpenMeteoSource()},
        nightly=Nightly(hour=1, minute=20),
    )


@definitions
def defs() -> Definitions:
    """Loaded lazily, so that importing the module builds nothing (settings may change first)."""
    return build_definitions()
