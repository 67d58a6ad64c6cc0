"""Dagster code location `insights`: marts that put domains side by side.

The domains never read each other (nightscout knows nothing of weather, nor weather of
glucose); this location reads both, so every dependency points one way: into it. Its models
read the other locations' tables as dbt sources mapped to their assets, so Dagster's lineage
crosses locations, and `phlo materialize dlt_weather_observations+` reaches its marts.
"""

from __future__ import annotations

from dagster import Definitions, definitions

from locations.insights.settings import insights_settings
from phlo_core.location import Nightly, location_definitions
from phlo_core.settings import PhloSettings


def dbt_vars(settings: PhloSettings) -> dict[str, str]:
    """The models' vars of the run's settings."""
    return {"weather_place": insights_settings(settings).insights_weather_place}


def build_definitions(settings: PhloSettings | None = None) -> Definitions:
    """The location's definitions on the calendar of `settings` (default: the environment's);
    every other setting reaches a run through its resources."""
    return location_definitions(
        settings,
        group="insights",
        job_name="insights_pipeline",
        job_description="Rebuild the cross-domain marts from the domains' daily tables.",
        dbt_project="insights",
        dbt_vars=dbt_vars,
        # After the domains' nightly runs (01:15, 01:20): the mart reads what they wrote.
        nightly=Nightly(
            hour=2,
            minute=0,
            description=(
                "Every night, after the domains' pipelines: rebuild the cross-domain marts."
            ),
        ),
    )


@definitions
def defs() -> Definitions:
    """Loaded lazily, so that importing the module builds nothing (settings may change first)."""
    return build_definitions()
