"""The sample Open-Meteo server speaks Open-Meteo's protocol over real HTTP."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from locations.weather.sample_data import UNITS, VARIABLES, hourly_values
from locations.weather.sample_server import SampleOpenMeteoServer

TODAY = dt.date(2024, 1, 20)
BERLIN = {"latitude": 52.52, "longitude": 13.41}
PLACES = ((52.52, 13.41), (40.71, -74.01), (-33.87, 151.21))
ALL = ",".join(VARIABLES)
WEATHER_CODES = {0, 1, 2, 3, 45, 61, 63, 65, 80, 81}


@pytest.fixture
def server() -> Iterator[SampleOpenMeteoServer]:
    with SampleOpenMeteoServer(today=TODAY) as server:
        yield server


def get(server: SampleOpenMeteoServer, path: str, **params: Any) -> httpx.Response:
    return httpx.get(server.url + path, params=params, timeout=5.0, trust_env=False)


def archive(server: SampleOpenMeteoServer, start: str, end: str, **params: Any) -> dict:
    response = get(server, "/v1/archive", start_date=start, end_date=end, **{**BERLIN, **params})
    assert response.status_code == 200, response.text
    return response.json()


def utc(text: str, offset_seconds: int = 0) -> dt.datetime:
    local = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
    return local - dt.timedelta(seconds=offset_seconds)


def test_archive_answers_in_open_meteos_shape(server: SampleOpenMeteoServer) -> None:
    response = get(
        server,
        "/v1/archive",
        **BERLIN,
        hourly="precipitation,temperature_2m",
        start_date="2024-01-01",
        end_date="2024-01-03",
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == [
        "latitude",
        "longitude",
        "generationtime_ms",
        "utc_offset_seconds",
        "timezone",
        "timezone_abbreviation",
        "elevation",
        "hourly_units",
        "hourly",
    ]
    assert (body["latitude"], body["longitude"]) == (52.5, 13.5)  # the 0.25° grid cell
    assert (body["utc_offset_seconds"], body["timezone"], body["timezone_abbreviation"]) == (
        0,
        "GMT",
        "GMT",
    )
    assert list(body["hourly_units"].items()) == [
        ("time", "iso8601"),
        ("precipitation", "mm"),
        ("temperature_2m", "°C"),
    ]
    hourly = body["hourly"]
    assert list(hourly) == ["time", "precipitation", "temperature_2m"]
    assert len(hourly["time"]) == len(hourly["temperature_2m"]) == 72
    assert (hourly["time"][0], hourly["time"][-1]) == ("2024-01-01T00:00", "2024-01-03T23:00")
    for i in (0, 13, 71):
        expected = hourly_values(52.52, 13.41, utc(hourly["time"][i]))
        assert hourly["temperature_2m"][i] == expected["temperature_2m"]
        assert hourly["precipitation"][i] == expected["precipitation"]
    assert server.requests[-1][0] == "/v1/archive"
    assert server.requests[-1][1]["hourly"] == "precipitation,temperature_2m"


def test_without_hourly_there_is_no_series(server: SampleOpenMeteoServer) -> None:
    body = archive(server, "2024-01-01", "2024-01-01")
    assert "hourly" not in body and "hourly_units" not in body


def test_the_archive_lags_with_nulls_and_refuses_the_future(
    server: SampleOpenMeteoServer,
) -> None:
    hourly = archive(server, "2024-01-14", "2024-01-17", hourly=ALL)["hourly"]
    by_day = {day: [] for day in ("2024-01-14", "2024-01-15", "2024-01-16", "2024-01-17")}
    for i, time in enumerate(hourly["time"]):
        by_day[time[:10]].extend(hourly[name][i] for name in VARIABLES)
    # today - 5 days (the 15th) is the last day with data.
    assert all(v is not None for v in by_day["2024-01-14"] + by_day["2024-01-15"])
    assert all(v is None for v in by_day["2024-01-16"] + by_day["2024-01-17"])

    response = get(server, "/v1/archive", **BERLIN, start_date="2024-01-19", end_date="2024-01-21")
    assert response.status_code == 400
    assert response.json() == {
        "error": True,
        "reason": "Parameter 'end_date' is out of allowed range from 1940-01-01 to 2024-01-20",
    }
    response = get(server, "/v1/archive", **BERLIN, start_date="1939-12-31", end_date="2024-01-01")
    assert response.json()["reason"].startswith("Parameter 'start_date' is out of allowed range")


def test_forecast_days_and_past_days(server: SampleOpenMeteoServer) -> None:
    response = get(server, "/v1/forecast", **BERLIN, hourly=ALL)
    hourly = response.json()["hourly"]
    assert len(hourly["time"]) == 7 * 24
    assert hourly["time"][0] == "2024-01-20T00:00"

    response = get(server, "/v1/forecast", **BERLIN, hourly=ALL, past_days=10, forecast_days=2)
    hourly = response.json()["hourly"]
    assert len(hourly["time"]) == 12 * 24
    assert (hourly["time"][0], hourly["time"][-1]) == ("2024-01-10T00:00", "2024-01-21T23:00")
    assert all(v is not None for name in VARIABLES for v in hourly[name])  # no archive lag

    response = get(
        server, "/v1/forecast", **BERLIN, hourly=ALL, start_date="2024-01-18", end_date="2024-01-19"
    )
    assert response.json()["hourly"]["time"][0] == "2024-01-18T00:00"
    response = get(server, "/v1/forecast", **BERLIN, start_date="2024-01-18", end_date="2024-02-06")
    assert response.status_code == 400
    assert response.json()["reason"] == (
        "Parameter 'end_date' is out of allowed range from 2023-10-20 to 2024-02-05"
    )


@pytest.mark.parametrize(
    ("path", "params", "status", "reason"),
    [
        (
            "/v1/archive",
            {"latitude": 91, "longitude": 0, "start_date": "2024-01-01", "end_date": "2024-01-01"},
            400,
            "Latitude must be in range of -90 to 90°. Given: 91.0.",
        ),
        (
            "/v1/forecast",
            {**BERLIN, "hourly": "temperature_2m,foo"},
            400,
            "Cannot initialize WeatherVariable from invalid String value foo for key hourly",
        ),
        (
            "/v1/archive",
            {**BERLIN, "start_date": "2024-1-01", "end_date": "2024-01-02"},
            400,
            "Invalid date format. Make sure to use 'YYYY-MM-DD'",
        ),
        (
            "/v1/archive",
            {**BERLIN, "start_date": "2024-01-03", "end_date": "2024-01-02"},
            400,
            "End-date must be larger or equals than start-date",
        ),
        ("/v1/forecast", {**BERLIN, "timezone": "Mars/Olympus"}, 400, "Invalid timezone"),
        ("/v1/forecast", {**BERLIN, "past_days": 93}, 400, None),
        ("/v1/archive", {**BERLIN}, 400, None),
        ("/v2/nowcast", {**BERLIN}, 404, "Not Found"),
    ],
)
def test_bad_requests_are_refused_like_open_meteo(
    server: SampleOpenMeteoServer,
    path: str,
    params: dict[str, Any],
    status: int,
    reason: str | None,
) -> None:
    response = get(server, path, **params)
    assert response.status_code == status
    body = response.json()
    assert body["error"] is True
    assert isinstance(body["reason"], str) and body["reason"]
    if reason is not None:
        assert body["reason"] == reason


def test_other_zones_shift_the_whole_series_by_one_fixed_offset(
    server: SampleOpenMeteoServer,
) -> None:
    body = archive(
        server, "2024-01-01", "2024-01-02", hourly="temperature_2m", timezone="Asia/Tokyo"
    )
    assert (body["utc_offset_seconds"], body["timezone"], body["timezone_abbreviation"]) == (
        9 * 3600,
        "Asia/Tokyo",
        "JST",
    )
    hourly = body["hourly"]
    assert (hourly["time"][0], len(hourly["time"])) == ("2024-01-01T00:00", 48)
    # Local midnight in Tokyo is 15:00 UTC the day before.
    first = dt.datetime(2023, 12, 31, 15, tzinfo=dt.UTC)
    assert hourly["temperature_2m"][0] == hourly_values(52.52, 13.41, first)["temperature_2m"]

    # Across a daylight-saving change the offset in force now is used for every hour: the times
    # run on without a gap or a repeat.
    before = dt.datetime.now(ZoneInfo("Europe/Berlin")).utcoffset()
    body = archive(
        server, "2023-03-25", "2023-03-27", hourly="temperature_2m", timezone="Europe/Berlin"
    )
    after = dt.datetime.now(ZoneInfo("Europe/Berlin")).utcoffset()
    offsets = {int(o.total_seconds()) for o in (before, after) if o is not None}
    assert body["utc_offset_seconds"] in offsets
    times = [dt.datetime.fromisoformat(t) for t in body["hourly"]["time"]]
    assert len(times) == 72 and times[0] == dt.datetime(2023, 3, 25)
    assert all(b - a == dt.timedelta(hours=1) for a, b in zip(times, times[1:], strict=False))
    temperatures = body["hourly"]["temperature_2m"]
    for i in (0, 30, 71):
        instant = utc(body["hourly"]["time"][i], body["utc_offset_seconds"])
        assert temperatures[i] == hourly_values(52.52, 13.41, instant)["temperature_2m"]


def test_answers_are_deterministic(server: SampleOpenMeteoServer) -> None:
    params = {**BERLIN, "hourly": ALL, "start_date": "2023-06-01", "end_date": "2023-06-07"}
    first = get(server, "/v1/archive", **params).content
    assert get(server, "/v1/archive", **params).content == first
    with SampleOpenMeteoServer(today=TODAY) as another:
        assert get(another, "/v1/archive", **params).content == first


def test_values_are_physical_and_rain_comes_in_spells(server: SampleOpenMeteoServer) -> None:
    for latitude, longitude in PLACES:
        hourly = archive(
            server,
            "2023-07-01",
            "2023-07-14",
            hourly=ALL,
            latitude=latitude,
            longitude=longitude,
        )["hourly"]
        assert len(hourly["time"]) == 14 * 24
        assert all(-60 <= t <= 55 and round(t, 1) == t for t in hourly["temperature_2m"])
        assert all(isinstance(h, int) and 0 <= h <= 100 for h in hourly["relative_humidity_2m"])
        assert all(0 <= p <= 6 and round(p, 1) == p for p in hourly["precipitation"])
        assert set(hourly["weather_code"]) <= WEATHER_CODES
        assert all(0 <= w <= 45 for w in hourly["wind_speed_10m"])
        assert all(985 <= p <= 1035 for p in hourly["pressure_msl"])
        assert set(UNITS) >= set(hourly)

        rain = hourly["precipitation"]
        wet_days = [any(rain[d * 24 : (d + 1) * 24]) for d in range(14)]
        assert any(wet_days) and not all(wet_days)
        assert any(
            a > 0 and b > 0 and c > 0 for a, b, c in zip(rain, rain[1:], rain[2:], strict=False)
        )
        for p, code in zip(rain, hourly["weather_code"], strict=True):
            assert (p > 0) == (code >= 61)


def test_injected_values_and_faults(server: SampleOpenMeteoServer) -> None:
    def with_a_gap(latitude: float, longitude: float, hour: dt.datetime) -> dict:
        values: dict[str, float | int | None] = dict(hourly_values(latitude, longitude, hour))
        if hour.hour == 3:
            values["temperature_2m"] = None
        return values

    with SampleOpenMeteoServer(today=TODAY, values=with_a_gap) as gappy:
        hourly = archive(gappy, "2024-01-01", "2024-01-01", hourly="temperature_2m")["hourly"]
    assert hourly["temperature_2m"][3] is None
    assert sum(t is None for t in hourly["temperature_2m"]) == 1

    server.fail_next(1, status=503)
    params = {**BERLIN, "start_date": "2024-01-01", "end_date": "2024-01-01"}
    assert get(server, "/v1/archive", **params).status_code == 503
    assert get(server, "/v1/archive", **params).status_code == 200
    assert [path for path, _ in server.requests] == ["/v1/archive", "/v1/archive"]
