"""An Open-Meteo-compatible server on loopback that serves the sample weather.

It speaks Open-Meteo's protocol for hourly data on one server: `GET /v1/archive` (the historical
archive; `start_date`/`end_date` required, values null after `today - archive_delay_days`) and
`GET /v1/forecast` (`past_days`/`forecast_days`, or `start_date`/`end_date`), with `latitude`,
`longitude`, `hourly` and `timezone`. As the real service does, it prints times in the requested
zone with one fixed UTC offset (the zone's offset now) and answers bad requests with HTTP 400
`{"error": true, "reason": ...}`. `fail_next()` (core's sample server) makes it answer the next
requests with an error status or a stall.

Run it by hand: `python -m locations.weather.sample_server --port 8080`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import re
from collections.abc import Callable, Mapping
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from locations.weather.sample_data import UNITS, VARIABLES, hourly_values
from phlo_core.sample_http import SampleAnswer, SampleHttpServer, SampleRequest

# Any JSON value: tests serve what a broken source might (1e30, text, NaN and Infinity as
# Python writes them) where numbers are due.
ValueSource = Callable[[float, float, dt.datetime], Mapping[str, object]]
Api = Literal["archive", "forecast"]
_APIS: dict[str, Api] = {"/v1/archive": "archive", "/v1/forecast": "forecast"}

ARCHIVE_FIRST_DAY = dt.date(1940, 1, 1)
FORECAST_PAST_DAYS_MAX = 92
FORECAST_DAYS_MAX = 16
FORECAST_DAYS_DEFAULT = 7
GRID_DEGREES = 0.25
ELEVATION_M = 38.0
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class BadRequestError(Exception):
    """A request Open-Meteo answers with HTTP 400 and this reason."""


class _Zone:
    def __init__(self, name: str | None) -> None:
        if name is None:
            self.name, self.abbreviation, self.offset = "GMT", "GMT", dt.timedelta(0)
            return
        if name == "auto":
            raise BadRequestError("The sample server does not resolve timezone=auto; name a zone")
        try:
            now = dt.datetime.now(ZoneInfo(name))
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise BadRequestError("Invalid timezone") from None
        # Like Open-Meteo: one offset for the whole series, the one in force now (no DST shifts).
        self.name = name
        self.abbreviation = now.tzname() or name
        self.offset = now.utcoffset() or dt.timedelta(0)


def _single(query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[-1] if values else None


def _coordinate(query: dict[str, list[str]], key: str, limit: int) -> float:
    raw = _single(query, key)
    if raw is None or raw.strip() == "":
        other = "longitude" if key == "latitude" else "latitude"
        if _single(query, other) is None:
            raise BadRequestError("Parameter 'latitude' and 'longitude' must not be empty")
        raise BadRequestError(
            "Parameter 'latitude' and 'longitude' must have the same number of elements"
        )
    try:
        value = float(raw)
    except ValueError:
        raise BadRequestError(f"Value of type 'Float' required for key '{key}'.") from None
    if math.isnan(value) or not -limit <= value <= limit:
        raise BadRequestError(
            f"{key.capitalize()} must be in range of -{limit} to {limit}°. Given: {value}."
        )
    return value


def _integer(query: dict[str, list[str]], key: str) -> int | None:
    raw = _single(query, key)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadRequestError(f"Value of type 'Int' required for key '{key}'.") from None


def _date(raw: str) -> dt.date:
    if not _DATE.fullmatch(raw):
        raise BadRequestError("Invalid date format. Make sure to use 'YYYY-MM-DD'")
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise BadRequestError("Invalid date") from None


def _dates(query: dict[str, list[str]]) -> tuple[dt.date, dt.date] | None:
    start, end = _single(query, "start_date"), _single(query, "end_date")
    if start is None and end is None:
        return None
    if start is None or end is None:
        raise BadRequestError(
            "Parameter 'start_date' and 'end_date' must have the same number of elements"
        )
    first, last = _date(start), _date(end)
    if last < first:
        raise BadRequestError("End-date must be larger or equals than start-date")
    return first, last


def _variables(query: dict[str, list[str]]) -> list[str]:
    names: list[str] = []
    for value in query.get("hourly", []):
        for name in value.split(","):
            name = name.strip()
            if not name:
                continue
            if name not in VARIABLES:
                raise BadRequestError(
                    f"Cannot initialize WeatherVariable from invalid String value {name} "
                    "for key hourly"
                )
            if name not in names:
                names.append(name)
    return names


def _check_range(first: dt.date, last: dt.date, lowest: dt.date, highest: dt.date) -> None:
    for parameter, day in (("start_date", first), ("end_date", last)):
        if not lowest <= day <= highest:
            raise BadRequestError(
                f"Parameter '{parameter}' is out of allowed range from {lowest} to {highest}"
            )


def _snap(value: float) -> float:
    return round(value / GRID_DEGREES) * GRID_DEGREES + 0.0  # + 0.0: never -0.0


class SampleOpenMeteoServer(SampleHttpServer):
    keep_blank_values = True  # as the service parses `?hourly=`

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        archive_delay_days: int = 5,
        today: dt.date | None = None,
        values: ValueSource | None = None,
    ) -> None:
        super().__init__(host=host, port=port)
        self.archive_delay_days = archive_delay_days
        self.today = today
        self.values: ValueSource = values or hourly_values
        self.requests: list[tuple[str, dict[str, str]]] = []

    def received(self, request: SampleRequest) -> None:
        self.requests.append((request.path, {k: ",".join(v) for k, v in request.query.items()}))

    def error_body(self, status: int, message: str) -> object:
        return {"error": True, "reason": message}

    def answer(self, request: SampleRequest) -> SampleAnswer:
        api: Api | None = _APIS.get(request.path)
        if api is None:
            return SampleAnswer(404, self.error_body(404, "Not Found"))
        try:
            return SampleAnswer(200, self.respond(api, request.query))
        except BadRequestError as exc:
            return SampleAnswer(400, self.error_body(400, str(exc)))

    def _utc_today(self) -> dt.date:
        return self.today or dt.datetime.now(dt.UTC).date()

    def respond(self, api: Api, query: dict[str, list[str]]) -> dict[str, object]:
        """The body Open-Meteo gives for a query (raises BadRequestError for a 400)."""
        dates = _dates(query)
        latitude = _coordinate(query, "latitude", 90)
        longitude = _coordinate(query, "longitude", 180)
        zone = _Zone(_single(query, "timezone"))
        variables = _variables(query)
        today = self._utc_today()
        if api == "archive":
            if dates is None:
                raise BadRequestError("Both 'start_date' and 'end_date' must be set in the url")
            _check_range(*dates, ARCHIVE_FIRST_DAY, today)
            first, last = dates
        else:
            past_days, forecast_days = (
                _integer(query, "past_days"),
                _integer(query, "forecast_days"),
            )
            if dates is not None:
                if past_days:
                    raise BadRequestError(
                        "Parameter 'past_days' is mutually exclusive with 'start_date' and "
                        "'end_date'"
                    )
                if forecast_days:
                    raise BadRequestError(
                        "Parameter 'forecast_days' is mutually exclusive with 'start_date' and "
                        "'end_date'"
                    )
                lowest = today - dt.timedelta(days=FORECAST_PAST_DAYS_MAX)
                _check_range(*dates, lowest, today + dt.timedelta(days=FORECAST_DAYS_MAX))
                first, last = dates
            else:
                forecast_days = FORECAST_DAYS_DEFAULT if forecast_days is None else forecast_days
                past_days = past_days or 0
                if not 0 <= forecast_days <= FORECAST_DAYS_MAX:
                    raise BadRequestError(
                        f"Forecast days is invalid. Allowed range 0 to {FORECAST_DAYS_MAX}. "
                        f"Given {forecast_days}."
                    )
                if not 0 <= past_days <= FORECAST_PAST_DAYS_MAX:
                    raise BadRequestError(
                        f"Past days is invalid. Allowed range 0 to {FORECAST_PAST_DAYS_MAX}. "
                        f"Given {past_days}."
                    )
                local_today = self.today or (dt.datetime.now(dt.UTC) + zone.offset).date()
                first = local_today - dt.timedelta(days=past_days)
                last = local_today + dt.timedelta(days=forecast_days - 1)

        body: dict[str, object] = {
            "latitude": _snap(latitude),
            "longitude": _snap(longitude),
            "generationtime_ms": 0.1,
            "utc_offset_seconds": int(zone.offset.total_seconds()),
            "timezone": zone.name,
            "timezone_abbreviation": zone.abbreviation,
            "elevation": ELEVATION_M,
        }
        if not variables:
            return body
        # The dates name days in the zone (by its fixed offset); values are at those UTC instants.
        start = dt.datetime.combine(first, dt.time(), dt.UTC) - zone.offset
        count = max(0, ((last - first).days + 1) * 24)
        instants = [start + dt.timedelta(hours=i) for i in range(count)]
        available_until = (
            dt.datetime.combine(today, dt.time(), dt.UTC)
            - dt.timedelta(days=self.archive_delay_days - 1)
            if api == "archive"
            else None
        )
        series: dict[str, list[object]] = {name: [] for name in variables}
        for instant in instants:
            if available_until is not None and instant >= available_until:
                row: Mapping[str, object] = {}
            else:
                row = self.values(latitude, longitude, instant)
            for name in variables:
                series[name].append(row.get(name))
        body["hourly_units"] = {"time": UNITS["time"], **{name: UNITS[name] for name in variables}}
        body["hourly"] = {
            "time": [(t + zone.offset).strftime("%Y-%m-%dT%H:%M") for t in instants],
            **series,
        }
        return body


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Serve Phlo's sample weather over Open-Meteo's archive and forecast APIs."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--archive-delay-days", type=int, default=5)
    args = parser.parse_args()
    server = SampleOpenMeteoServer(
        host=args.host, port=args.port, archive_delay_days=args.archive_delay_days
    )
    server.serve_until_interrupted("sample Open-Meteo")


if __name__ == "__main__":
    main()
