"""The example location's own settings, read from the environment and .env like phlo's."""

from __future__ import annotations

from phlo_core.settings import LocationSettings, PhloSettings, load_location_settings


class ExampleSettings(LocationSettings):
    # The source's base URL, without credentials (required to materialize example_events).
    example_url: str = ""
    # A day with more than this percentage of its events rejected fails the run.
    example_max_rejected_pct: float = 5.0


def example_settings(settings: PhloSettings) -> ExampleSettings:
    return load_location_settings(ExampleSettings, settings)
