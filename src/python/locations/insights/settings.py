"""The insights location's own settings: which place's weather sits beside the glucose days."""

from __future__ import annotations

import re

from pydantic import field_validator

from phlo_core.settings import LocationSettings, PhloSettings, load_location_settings


class InsightsSettings(LocationSettings):
    # One of the names in WEATHER_PLACES (whose default place is berlin).
    insights_weather_place: str = "berlin"

    @field_validator("insights_weather_place")
    @classmethod
    def _place_name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", value.strip()):
            raise ValueError(f"{value!r} is not a place name from WEATHER_PLACES (e.g. 'berlin')")
        return value.strip()


def insights_settings(settings: PhloSettings) -> InsightsSettings:
    return load_location_settings(InsightsSettings, settings)
