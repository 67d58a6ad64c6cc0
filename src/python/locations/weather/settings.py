"""The weather location's own settings: the places to observe and the Open-Meteo endpoints.

Read like the core's (environment and `.env`, one-line errors naming the variable) through
`phlo_core.settings.load_location_settings`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from phlo_core.redact import has_userinfo, redact
from phlo_core.settings import LocationSettings, PhloSettings, load_location_settings

DEFAULT_PLACES = "berlin=52.52,13.41"
_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class Place:
    name: str
    latitude: float
    longitude: float


def parse_places(text: str) -> tuple[Place, ...]:
    """`name=latitude,longitude` entries separated by `;`: `oslo=59.91,10.75;rome=41.9,12.5`."""
    places: list[Place] = []
    for raw in text.split(";"):
        entry = raw.strip()
        if not entry:
            continue
        name, sep, coordinates = entry.partition("=")
        name = name.strip()
        if not sep or not _NAME.fullmatch(name):
            raise ValueError(
                f"{entry!r} is not `name=latitude,longitude` with a lowercase name "
                "(e.g. 'oslo=59.91,10.75')"
            )
        try:
            lat_text, lon_text = coordinates.split(",")
            latitude, longitude = float(lat_text), float(lon_text)
        except ValueError:
            raise ValueError(
                f"{entry!r}: coordinates must be `latitude,longitude` in degrees"
            ) from None
        if not -90 <= latitude <= 90 or not -180 <= longitude <= 180:
            raise ValueError(f"{entry!r}: latitude must be in -90..90 and longitude in -180..180")
        if any(place.name == name for place in places):
            raise ValueError(f"place {name!r} is listed twice")
        places.append(Place(name, latitude, longitude))
    if not places:
        raise ValueError(f"no place given (e.g. {DEFAULT_PLACES!r})")
    return tuple(places)


def _base_url(value: str, variable: str) -> str:
    if has_userinfo(value.strip()):  # first, and without the value: it holds a secret
        raise ValueError("the URL carries a user name or password (value not shown): remove it")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{redact(value)!r} is not an http(s) URL")
    if parts.path.rstrip("/").endswith(("/v1/archive", "/v1/forecast")):
        raise ValueError(
            f"{value.strip()!r} includes the API path: give the server only "
            f"(e.g. {variable} = 'https://archive-api.open-meteo.com')"
        )
    return value.strip().rstrip("/")


class WeatherSettings(LocationSettings):
    weather_places: Annotated[str, NoDecode] = DEFAULT_PLACES
    open_meteo_url: str = "https://archive-api.open-meteo.com"
    open_meteo_forecast_url: str = "https://api.open-meteo.com"
    # The archive (ERA5) runs about five days behind: days closer to today come from the
    # forecast API, which also serves past days.
    open_meteo_archive_delay_days: int = Field(default=5, ge=0, le=60)
    weather_max_rejected_pct: float = Field(default=5.0, ge=0, le=100)

    @field_validator("weather_places")
    @classmethod
    def _valid_places(cls, value: str) -> str:
        parse_places(value)
        return value

    @field_validator("open_meteo_url")
    @classmethod
    def _valid_archive_url(cls, value: str) -> str:
        return _base_url(value, "OPEN_METEO_URL")

    @field_validator("open_meteo_forecast_url")
    @classmethod
    def _valid_forecast_url(cls, value: str) -> str:
        return _base_url(value, "OPEN_METEO_FORECAST_URL")

    @property
    def places(self) -> tuple[Place, ...]:
        return parse_places(self.weather_places)


def weather_settings(settings: PhloSettings) -> WeatherSettings:
    return load_location_settings(WeatherSettings, settings)
