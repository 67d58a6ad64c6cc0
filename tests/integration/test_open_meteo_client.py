"""The Open-Meteo client against an Open-Meteo-compatible server over real HTTP."""

from __future__ import annotations

import datetime as dt

import pytest

from locations.weather.client import OpenMeteoClient
from locations.weather.sample_data import hourly_values
from locations.weather.sample_server import SampleOpenMeteoServer
from locations.weather.settings import Place
from phlo_core.http import RetryPolicy, SourceError

OSLO = Place("oslo", 59.91, 10.75)
ROME = Place("rome", 41.9, 12.5)
TODAY = dt.date(2024, 6, 20)


def client_for(server: SampleOpenMeteoServer, attempts: int = 3) -> OpenMeteoClient:
    return OpenMeteoClient(
        server.url,
        server.url,
        archive_delay_days=5,
        timeout_seconds=2.0,
        policy=RetryPolicy(max_attempts=attempts, backoff_seconds=0.01),
    )


def test_one_request_per_place_and_api_and_every_hour_in_utc() -> None:
    with SampleOpenMeteoServer(today=TODAY) as server, client_for(server) as client:
        fetched = client.fetch((OSLO, ROME), dt.date(2024, 6, 12), dt.date(2024, 6, 17), TODAY)
        requests = list(server.requests)
    # 12..15 from the archive, 16..17 from the forecast API, for each place: four requests.
    assert sorted((path, query["latitude"]) for path, query in requests) == [
        ("/v1/archive", "41.9"),
        ("/v1/archive", "59.91"),
        ("/v1/forecast", "41.9"),
        ("/v1/forecast", "59.91"),
    ]
    assert all(query["timezone"] == "GMT" for _, query in requests)
    assert fetched.requests == 4
    assert len(fetched.hours) == 2 * 6 * 24
    sources = {(h.place.name, h.observed_at.date()): h.source for h in fetched.hours}
    assert sources[("oslo", dt.date(2024, 6, 15))] == "archive"
    assert sources[("oslo", dt.date(2024, 6, 16))] == "forecast"
    first = min(fetched.hours, key=lambda h: (h.place.name, h.observed_at))
    assert first.observed_at == dt.datetime(2024, 6, 12, tzinfo=dt.UTC)
    assert (
        first.values["temperature_2m"]
        == hourly_values(OSLO.latitude, OSLO.longitude, first.observed_at)["temperature_2m"]
    )


def test_server_errors_are_retried_and_refusals_say_why() -> None:
    with SampleOpenMeteoServer(today=TODAY) as server, client_for(server) as client:
        server.fail_next(2, status=503)
        fetched = client.fetch((OSLO,), dt.date(2024, 6, 1), dt.date(2024, 6, 1), TODAY)
        assert len(fetched.hours) == 24 and fetched.requests == 3

        nowhere = Place("nowhere", 91.0, 0.0)
        with pytest.raises(SourceError) as error:
            client.fetch((nowhere,), dt.date(2024, 6, 1), dt.date(2024, 6, 1), TODAY)
    message = str(error.value)
    assert "Open-Meteo archive error" in message and "HTTP 400" in message
    assert "Latitude must be in range of -90 to 90" in message  # the service's own reason
    assert "\n" not in message


def test_an_unavailable_service_fails_after_the_configured_attempts() -> None:
    with SampleOpenMeteoServer(today=TODAY) as server, client_for(server, attempts=2) as client:
        server.fail_next(2, status=500)
        with pytest.raises(
            SourceError, match="Open-Meteo archive unavailable: .* after 2 attempts"
        ):
            client.fetch((OSLO,), dt.date(2024, 6, 1), dt.date(2024, 6, 1), TODAY)
