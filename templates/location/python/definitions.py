"""Dagster code location `example`: the template's events, from its source to bronze."""

from __future__ import annotations

from dagster import Definitions, definitions

from locations.example.assets import ASSET_NAME, SOURCE, build_ingestion_asset
from locations.example.source import ExampleSource
from phlo_core.location import location_definitions
from phlo_core.settings import PhloSettings


def build_definitions(settings: PhloSettings | None = None) -> Definitions:
    """The location's definitions on the calendar of `settings` (default: the environment's)."""
    return location_definitions(
        settings,
        group="example",
        job_name="example_pipeline",
        job_description="Ingest a day of example events and build the example models on it.",
        ingestion=build_ingestion_asset,
        dbt_project="example",
        resources={SOURCE: ExampleSource()},
    )


def preflight(settings: PhloSettings, asset_names: list[str]) -> None:
    """Before a run: the ingestion needs EXAMPLE_URL (a usage error, not a failed run)."""
    if ASSET_NAME in asset_names:
        ExampleSource(settings).url()


@definitions
def defs() -> Definitions:
    """Loaded lazily, so that importing the module builds nothing (settings may change first)."""
    return build_definitions()
