"""The weather location's rules without a server: places, the API split, time conventions and
the day's hours."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from locations.weather.client import VARIABLES, Hour, OpenMeteoClient, _parse
from locations.weather.ingest import expected_hours, prepare_batch
from locations.weather.settings import Place, parse_places, weather_settings
from phlo_core.calendar import DayRange, utc_bounds
from phlo_core.http import SourceError
from phlo_core.settings import SettingsError, load_settings

BERLIN = ZoneInfo("Europe/Berlin")
PLACE = Place("berlin", 52.52, 13.41)
PLAUSIBLE = {
    "temperature_2m": 4.5,
    "relative_humidity_2m": 81,
    "precipitation": 0.2,
    "weather_code": 61,
    "wind_speed_10m": 12.5,
    "pressure_msl": 1008.4,
}


def test_places_parse_and_bad_ones_name_the_variable() -> None:
    assert parse_places(" oslo=59.91,10.75 ; rome=41.9,12.5;") == (
        Place("oslo", 59.91, 10.75),
        Place("rome", 41.9, 12.5),
    )
    assert weather_settings(load_settings()).places == (Place("berlin", 52.52, 13.41),)
    for bad, says in [
        ("oslo", "name=latitude,longitude"),
        ("Oslo=59.9,10.7", "lowercase"),
        ("oslo=91,10", "latitude must be in -90..90"),
        ("oslo=north,10", "coordinates"),
        ("oslo=1,2;oslo=3,4", "listed twice"),
        (" ; ", "no place"),
    ]:
        with pytest.raises(SettingsError) as error:
            weather_settings(load_settings(weather_places=bad))
        message = str(error.value)
        assert message.startswith("invalid configuration: WEATHER_PLACES: "), message
        assert says in message and "\n" not in message


def test_open_meteo_urls_are_servers_without_credentials() -> None:
    with pytest.raises(SettingsError, match="OPEN_METEO_URL: .*includes the API path"):
        weather_settings(
            load_settings(open_meteo_url="https://archive-api.open-meteo.com/v1/archive")
        )
    with pytest.raises(SettingsError) as error:
        weather_settings(load_settings(open_meteo_forecast_url="https://me:pw@api.example"))
    assert "pw" not in str(error.value) and "OPEN_METEO_FORECAST_URL" in str(error.value)


def test_recent_days_go_to_the_forecast_api_the_rest_to_the_archive() -> None:
    client = OpenMeteoClient("http://a.invalid", "http://f.invalid", archive_delay_days=5)
    today = dt.date(2024, 6, 20)
    assert client.plan(dt.date(2024, 6, 1), dt.date(2024, 6, 10), today) == [
        ("archive", dt.date(2024, 6, 1), dt.date(2024, 6, 10))
    ]
    # The archive has days up to 5 before today; the 5 latest come from the forecast API.
    assert client.plan(dt.date(2024, 6, 10), dt.date(2024, 6, 20), today) == [
        ("archive", dt.date(2024, 6, 10), dt.date(2024, 6, 15)),
        ("forecast", dt.date(2024, 6, 16), dt.date(2024, 6, 20)),
    ]
    assert client.plan(dt.date(2024, 6, 18), dt.date(2024, 6, 19), today) == [
        ("forecast", dt.date(2024, 6, 18), dt.date(2024, 6, 19))
    ]
    client.close()


def _answer(times: list[str], offset: int = 0) -> dict[str, object]:
    return {
        "utc_offset_seconds": offset,
        "hourly": {"time": times, **{name: [1] * len(times) for name in VARIABLES}},
    }


def test_times_are_moved_to_utc_by_the_answers_own_offset() -> None:
    """Asked in GMT; a server that shifts anyway (one fixed offset) is still read right."""
    [gmt] = _parse(_answer(["2024-03-31T01:00"]), PLACE, "archive", "u")
    [shifted] = _parse(_answer(["2024-03-31T03:00"], offset=7200), PLACE, "archive", "u")
    assert gmt.observed_at == shifted.observed_at == dt.datetime(2024, 3, 31, 1, tzinfo=dt.UTC)
    with pytest.raises(SourceError, match="lacks hourly.temperature_2m"):
        _parse({"hourly": {"time": ["2024-03-31T01:00"]}}, PLACE, "archive", "u")
    with pytest.raises(SourceError, match="malformed time"):
        _parse(_answer(["yesterday"]), PLACE, "archive", "u")


def _hours(days: DayRange, values: dict[str, object] | None = None) -> list[Hour]:
    """Every UTC hour of the UTC days the window touches, as a GMT request returns them."""
    start, end = utc_bounds(days, BERLIN)
    moment = dt.datetime.combine(start.date(), dt.time(0), tzinfo=dt.UTC)
    found = []
    while moment.date() <= (end - dt.timedelta(hours=1)).date():
        found.append(Hour(PLACE, moment, dict(values or PLAUSIBLE), "archive"))
        moment += dt.timedelta(hours=1)
    return found


def test_a_local_day_holds_its_own_23_24_or_25_hours() -> None:
    days = DayRange(dt.date(2024, 3, 30), dt.date(2024, 4, 1))
    batch = prepare_batch(_hours(days), days, BERLIN, places=1)
    assert {day: s.loaded for day, s in batch.stats.items()} == {
        dt.date(2024, 3, 30): 24,
        dt.date(2024, 3, 31): 23,
    }
    assert expected_hours(dt.date(2024, 10, 27), BERLIN) == 25
    # Half-hour shifts: the hours the source labels (UTC hour starts) within the local day.
    lord_howe = ZoneInfo("Australia/Lord_Howe")
    assert expected_hours(dt.date(2024, 10, 6), lord_howe) == 23  # 23.5 hours long
    assert expected_hours(dt.date(2024, 4, 7), lord_howe) == 25  # 24.5 hours long
    assert expected_hours(dt.date(2024, 4, 8), lord_howe) == 24
    autumn = DayRange(dt.date(2024, 10, 27), dt.date(2024, 10, 28))
    assert (
        prepare_batch(_hours(autumn), autumn, BERLIN, places=1).stats[dt.date(2024, 10, 27)].loaded
        == 25
    )


def test_missing_duplicate_and_malformed_hours_are_counted_apart() -> None:
    day = DayRange(dt.date(2024, 1, 10), dt.date(2024, 1, 11))
    hours = _hours(day)
    in_day = [h for h in hours if h.observed_at.astimezone(BERLIN).date() == day.start]
    # Hour 1 comes only empty (missing); hours 2 and 3 come malformed first, then again;
    # hour 0 comes twice; an empty copy never hides a real one (hour 5).
    empty: dict[str, object] = {str(name): None for name in VARIABLES}
    nothing = Hour(PLACE, in_day[1].observed_at, empty, "archive")
    text = Hour(PLACE, in_day[2].observed_at, {**in_day[2].values, "weather_code": "rain"}, "x")
    out_of_range = Hour(PLACE, in_day[3].observed_at, {**in_day[3].values, "pressure_msl": 9}, "x")
    empty_first = Hour(PLACE, in_day[5].observed_at, empty, "archive")
    rest = [h for h in hours if h.observed_at != in_day[1].observed_at]
    batch = prepare_batch(
        [nothing, text, out_of_range, empty_first, *rest, in_day[0]], day, BERLIN, places=1
    )
    stats = batch.stats[day.start]
    assert (stats.expected, stats.missing, stats.duplicates, stats.rejected, stats.loaded) == (
        24,
        1,
        3,
        2,
        21,
    )
    reasons = sorted(batch.rejected["reason"])
    assert reasons[0].startswith("pressure_msl") and "9" in reasons[0]
    assert reasons[1] == "weather_code: not a whole number (got 'rain')"


def test_hours_from_now_on_are_not_observations_yet() -> None:
    """The forecast API fills the rest of today with predictions: not loaded, missing."""
    day = DayRange(dt.date(2024, 1, 10), dt.date(2024, 1, 11))
    start, _ = utc_bounds(day, BERLIN)
    now = start + dt.timedelta(hours=10, minutes=30)
    batch = prepare_batch(_hours(day), day, BERLIN, places=1, now=now)
    stats = batch.stats[day.start]
    assert (stats.loaded, stats.missing) == (11, 13)  # hours 0..10 have happened
    assert all(moment < now for moment in batch.rows["observed_at"])


def test_numbers_no_column_can_hold_are_rejected_hours_never_missing_ones() -> None:
    """1e30 where a whole number is due overflowed the whole run; a temperature that is no
    number was counted as rejected and again as missing. Each is one rejected hour now."""
    day = DayRange(dt.date(2024, 1, 10), dt.date(2024, 1, 11))
    hours = _hours(day)
    in_day = [h for h in hours if h.observed_at.astimezone(BERLIN).date() == day.start]
    odd: dict[int, dict[str, object]] = {
        1: {"relative_humidity_2m": 1e30},
        2: {"weather_code": -1e30},
        3: {"relative_humidity_2m": 10**400},  # JSON may write any integer out in full
        4: {"precipitation": -(10**400)},
        5: {"temperature_2m": float("nan")},
        6: {"temperature_2m": "NaN"},
        7: {"temperature_2m": None, "wind_speed_10m": float("inf")},
        8: {"temperature_2m": -1e30},
    }
    changed = {
        in_day[i].observed_at: Hour(PLACE, in_day[i].observed_at, {**PLAUSIBLE, **v}, "archive")
        for i, v in odd.items()
    }
    batch = prepare_batch([changed.get(h.observed_at, h) for h in hours], day, BERLIN, places=1)
    stats = batch.stats[day.start]
    assert (stats.expected, stats.missing, stats.rejected, stats.loaded) == (24, 0, 8, 16)
    reasons = dict(zip(batch.rejected["observed_at"], batch.rejected["reason"], strict=True))
    assert [reasons[in_day[i].observed_at] for i in odd] == [
        "relative_humidity_2m: out of range (got '1e+30')",
        "weather_code: out of range (got '-1e+30')",
        f"relative_humidity_2m: out of range (got {str(10**400)[:40]!r})",
        f"precipitation: out of range (got {str(-(10**400))[:40]!r})",
        "temperature_2m: not a number (got 'nan')",
        "temperature_2m: not a number (got 'NaN')",
        "wind_speed_10m: not a number (got 'inf')",
        "temperature_2m: in_range(-90, 60) (got -1e+30)",
    ]
    # Whole numbers as sent stay exactly that, the rest of the day loads as before.
    assert set(batch.rows["relative_humidity_2m"]) == {81}
    assert set(batch.rows["weather_code"]) == {61}
