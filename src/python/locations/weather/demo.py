"""What `phlo demo` needs from this location: a sample source, the days, what to show."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

from locations.weather.sample_server import SampleOpenMeteoServer
from phlo_core.calendar import DayRange
from phlo_core.settings import PhloSettings

DAYS = DayRange(dt.date(2024, 1, 1), dt.date(2024, 1, 15))
SELECTION = "dlt_weather_observations+"
SOURCE = "a local Open-Meteo-compatible server (generated sample weather, not observations)"
EXPLORE_SQL = "select * from marts.mrt_daily_weather_summary"
PLACES = "berlin=52.52,13.41;oslo=59.91,10.75"

REPORTS = [
    (
        "Daily weather",
        """
        select observation_date, place, temperature_min_c, temperature_mean_c,
               temperature_max_c, precipitation_total_mm, wind_speed_max_kmh, weather_description,
               hours_observed
        from marts.mrt_daily_weather_summary
        order by place, observation_date
        """,
    ),
]


@contextmanager
def sample_source(settings: PhloSettings) -> Iterator[dict[str, object]]:
    """Serve sample weather over Open-Meteo's real HTTP API (archive and forecast) on loopback."""
    with SampleOpenMeteoServer() as server:
        yield {
            "open_meteo_url": server.url,
            "open_meteo_forecast_url": server.url,
            "weather_places": PLACES,
        }
