"""Open-Meteo client: hourly weather for a place over a range of UTC days, one request per place
and API.

Days the archive (ERA5) has come from `/v1/archive`; the latest days, which it does not have yet
(OPEN_METEO_ARCHIVE_DELAY_DAYS), from the forecast API's `/v1/forecast`, which serves past days
too. Hours are always asked for in GMT: with any other `timezone` the service shifts the whole
series by one fixed offset, wrong on one side of every daylight-saving change. The answer's
`utc_offset_seconds` is still applied, so a server that shifts anyway is read correctly.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from locations.weather.settings import Place, WeatherSettings, weather_settings
from phlo_core.http import RetryingClient, RetryPolicy, SourceError, http_options
from phlo_core.resources import SettingsResource
from phlo_core.settings import (
    DEFAULT_HTTP_DEADLINE_SECONDS,
    DEFAULT_HTTP_MAX_RESPONSE_MB,
    PhloSettings,
)

ARCHIVE_PATH = "/v1/archive"
FORECAST_PATH = "/v1/forecast"
VARIABLES = (
    "temperature_2m",
    "relative_humidity_2m",
    "precipitation",
    "weather_code",
    "wind_speed_10m",
    "pressure_msl",
)


@dataclass(frozen=True)
class Hour:
    """One hour of one place as the source sent it (values unchecked: validation comes later)."""

    place: Place
    observed_at: dt.datetime  # start of the hour, UTC
    values: dict[str, Any]
    source: str  # archive | forecast


@dataclass
class FetchResult:
    hours: list[Hour] = field(default_factory=list)
    requests: int = 0


def _parse(body: object, place: Place, source: str, url: str) -> list[Hour]:
    """The hourly series of one answer, each time moved to UTC by `utc_offset_seconds`."""
    if not isinstance(body, dict):
        raise SourceError(f"Open-Meteo answered {url} with something other than an object")
    hourly = body.get("hourly")
    offset = body.get("utc_offset_seconds", 0)
    if not isinstance(hourly, dict) or not isinstance(hourly.get("time"), list):
        raise SourceError(f"Open-Meteo's answer to {url} has no hourly.time series")
    if not isinstance(offset, int):
        raise SourceError(f"Open-Meteo's answer to {url} has a malformed utc_offset_seconds")
    times: list[Any] = hourly["time"]
    series = {}
    for name in VARIABLES:
        values = hourly.get(name)
        if not isinstance(values, list) or len(values) != len(times):
            raise SourceError(
                f"Open-Meteo's answer to {url} lacks hourly.{name} for every hour "
                f"({len(times)} times)"
            )
        series[name] = values
    shift = dt.timedelta(seconds=offset)
    hours = []
    for i, text in enumerate(times):
        try:
            local = dt.datetime.fromisoformat(str(text))
        except ValueError:
            raise SourceError(
                f"Open-Meteo's answer to {url} has a malformed time {str(text)[:40]!r}"
            ) from None
        if local.tzinfo is not None:
            moment = local.astimezone(dt.UTC)
        else:
            moment = (local - shift).replace(tzinfo=dt.UTC)
        hours.append(Hour(place, moment, {name: series[name][i] for name in VARIABLES}, source))
    return hours


class OpenMeteoClient:
    def __init__(
        self,
        archive_url: str,
        forecast_url: str,
        *,
        archive_delay_days: int = 5,
        timeout_seconds: float = 30.0,
        deadline_seconds: float = DEFAULT_HTTP_DEADLINE_SECONDS,
        max_response_mb: float = DEFAULT_HTTP_MAX_RESPONSE_MB,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.archive_delay_days = archive_delay_days
        self._archive, self._forecast = (
            RetryingClient(
                name,
                url,
                timeout_seconds=timeout_seconds,
                deadline_seconds=deadline_seconds,
                max_response_mb=max_response_mb,
                policy=policy,
            )
            for name, url in (
                ("Open-Meteo archive", archive_url),
                ("Open-Meteo forecast", forecast_url),
            )
        )

    @classmethod
    def from_settings(cls, settings: PhloSettings) -> OpenMeteoClient:
        own: WeatherSettings = weather_settings(settings)
        return cls(
            own.open_meteo_url,
            own.open_meteo_forecast_url,
            archive_delay_days=own.open_meteo_archive_delay_days,
            **http_options(settings),
        )

    def close(self) -> None:
        self._archive.close()
        self._forecast.close()

    def __enter__(self) -> OpenMeteoClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def requests(self) -> int:
        return self._archive.attempts_made + self._forecast.attempts_made

    def plan(
        self, first: dt.date, last: dt.date, today: dt.date
    ) -> list[tuple[str, dt.date, dt.date]]:
        """(api, first, last) for the UTC days first..last: the archive up to
        `archive_delay_days` before today, the forecast API for the days after that."""
        archive_last = today - dt.timedelta(days=self.archive_delay_days)
        parts = []
        if first <= archive_last:
            parts.append(("archive", first, min(last, archive_last)))
        if last > archive_last:
            parts.append(("forecast", max(first, archive_last + dt.timedelta(days=1)), last))
        return parts

    def fetch(
        self, places: tuple[Place, ...], first: dt.date, last: dt.date, today: dt.date
    ) -> FetchResult:
        """Every hour of the UTC days first..last (inclusive) for every place."""
        result = FetchResult()
        for place in places:
            for api, start, end in self.plan(first, last, today):
                client, path = (
                    (self._archive, ARCHIVE_PATH)
                    if api == "archive"
                    else (self._forecast, FORECAST_PATH)
                )
                params = {
                    "latitude": place.latitude,
                    "longitude": place.longitude,
                    "hourly": ",".join(VARIABLES),
                    "start_date": start.isoformat(),
                    "end_date": end.isoformat(),
                    "timezone": "GMT",
                }
                body = client.get_json(path, params=params)
                result.hours += _parse(body, place, api, f"{client.origin}{path}")
        result.requests = self.requests
        return result


class OpenMeteoSource(SettingsResource):
    """The Dagster resource `open_meteo`: the location's settings (its places) and a client for
    them, read from the run's settings (phlo's command, or the environment of a run Dagster
    launched)."""

    @property
    def own(self) -> WeatherSettings:
        return weather_settings(self.settings)

    def client(self) -> OpenMeteoClient:
        return OpenMeteoClient.from_settings(self.settings)
