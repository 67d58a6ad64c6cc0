"""The weather pipeline end to end: real HTTP (an Open-Meteo-compatible server), real Dagster
runs, real dbt, real DuckLake; values checked against the served hours."""

from __future__ import annotations

import datetime as dt
import statistics
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from zoneinfo import ZoneInfo

import httpx
import pytest

from locations.weather.sample_data import hourly_values
from locations.weather.sample_server import SampleOpenMeteoServer
from phlo_core.calendar import DayRange, parse_day_range, today, utc_bounds
from phlo_core.lakehouse.connect import query
from phlo_core.runs.engine import RunOutcome, materialize
from phlo_core.settings import PhloSettings

TIMEZONE = "Europe/Berlin"
PLACES = {"berlin": (52.52, 13.41), "oslo": (59.91, 10.75)}
PLACES_SETTING = ";".join(f"{name}={lat},{lon}" for name, (lat, lon) in PLACES.items())
# Around the spring daylight-saving change in Berlin: 2024-03-31 has 23 hours.
SPRING = parse_day_range("2024-03-30..2024-04-01")
# And the autumn one: 2024-10-27 has 25 hours.
AUTUMN = parse_day_range("2024-10-26..2024-10-28")
EVERYTHING = "dlt_weather_observations+"
TABLES = [
    "raw.weather_observations",
    "raw.weather_observations_rejected",
    "bronze.stg_weather_observations",
    "silver.fct_weather_readings",
    "silver.fct_daily_weather",
    "marts.mrt_daily_weather_summary",
]


def snapshot(settings: PhloSettings) -> dict[str, list[tuple]]:
    return {
        table: sorted(query(f"select * from {table}", settings).rows, key=repr) for table in TABLES
    }


@pytest.fixture(scope="module")
def server() -> Iterator[SampleOpenMeteoServer]:
    with SampleOpenMeteoServer() as s:
        yield s


def weather_settings(home: object, url: str, **overrides: object) -> PhloSettings:
    from phlo_core.settings import load_settings

    values: dict[str, object] = {
        "phlo_home": home,
        "phlo_timezone": TIMEZONE,
        "open_meteo_url": url,
        "open_meteo_forecast_url": url,
        "weather_places": PLACES_SETTING,
        "http_backoff_seconds": 0.01,
        "http_max_attempts": 3,
        "http_timeout_seconds": 2.0,
        **overrides,
    }
    return load_settings(**values)


@pytest.fixture
def make(tmp_path_factory: pytest.TempPathFactory, server: SampleOpenMeteoServer):  # noqa: ANN201
    def build(url: str | None = None, **overrides: object) -> PhloSettings:
        home = tmp_path_factory.mktemp("weather") / "phlo"
        return weather_settings(home, url or server.url, **overrides)

    return build


def run(selection: str, days: DayRange, settings: PhloSettings) -> list[RunOutcome]:
    outcomes = materialize(selection, days, settings)
    assert outcomes and all(o.success for o in outcomes), [o.errors for o in outcomes]
    return outcomes


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, server: SampleOpenMeteoServer) -> PhloSettings:
    """The spring days built in one range run: what the other tests compare against."""
    settings = weather_settings(tmp_path_factory.mktemp("clean") / "phlo", server.url)
    outcomes = run(EVERYTHING, SPRING, settings)
    assert [o.location for o in outcomes] == ["weather", "insights"]
    return settings


def served_hours(
    url: str, place: str, day: dt.date, tz: ZoneInfo
) -> list[tuple[dt.datetime, dict[str, object]]]:
    """The hours of one local day as the server serves them, asked for in GMT over HTTP."""
    start, end = utc_bounds(DayRange(day, day + dt.timedelta(days=1)), tz)
    lat, lon = PLACES[place]
    body = httpx.get(
        f"{url}/v1/archive",
        params={
            "latitude": lat,
            "longitude": lon,
            "start_date": start.date().isoformat(),
            "end_date": (end - dt.timedelta(hours=1)).date().isoformat(),
            "hourly": "temperature_2m,precipitation,weather_code,wind_speed_10m",
            "timezone": "GMT",
        },
        trust_env=False,
    ).json()
    hourly = body["hourly"]
    hours = []
    for i, text in enumerate(hourly["time"]):
        moment = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
        if start <= moment < end:
            hours.append((moment, {name: hourly[name][i] for name in hourly if name != "time"}))
    return hours


def expected_day(hours: list[tuple[dt.datetime, dict[str, object]]]) -> dict[str, object]:
    temps = [float(v["temperature_2m"]) for _, v in hours]  # type: ignore[arg-type]
    codes = Counter(int(v["weather_code"]) for _, v in hours)  # type: ignore[arg-type]
    top = max(codes.values())
    return {
        "temperature_min_c": min(temps),
        "temperature_mean_c": round(statistics.fmean(temps), 2),
        "temperature_max_c": max(temps),
        "precipitation_total_mm": round(sum(float(v["precipitation"]) for _, v in hours), 2),  # type: ignore[arg-type]
        "wind_speed_max_kmh": max(float(v["wind_speed_10m"]) for _, v in hours),  # type: ignore[arg-type]
        "dominant_weather_code": max(code for code, n in codes.items() if n == top),
        "hours_observed": len(hours),
    }


def rows_of(sql: str, settings: PhloSettings) -> list[dict[str, object]]:
    result = query(sql, settings)
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def test_each_local_day_holds_exactly_its_own_hours(built: PhloSettings) -> None:
    counts = query(
        "select place, partition_date, count(*), count(distinct observed_at) "
        "from raw.weather_observations group by all order by all",
        built,
    ).rows
    hours = {dt.date(2024, 3, 30): 24, dt.date(2024, 3, 31): 23, dt.date(2024, 4, 1): 24}
    assert counts == [
        (place, day, n, n) for place in sorted(PLACES) for day, n in sorted(hours.items())
    ]
    daily = query(
        "select observation_date, hours_in_day, hours_observed from silver.fct_daily_weather "
        "where place = 'oslo' order by 1",
        built,
    ).rows
    assert daily == [(day, n, n) for day, n in sorted(hours.items())]
    local_hours = query(
        "select hour_of_day from silver.fct_weather_readings "
        "where place = 'berlin' and observation_date = '2024-03-31' order by observed_at",
        built,
    ).rows
    assert [h for (h,) in local_hours] == [0, 1, *range(3, 24)]  # 02:00 does not exist that day


def test_daily_weather_matches_an_independent_computation(
    built: PhloSettings, server: SampleOpenMeteoServer
) -> None:
    rows = rows_of("select * from silver.fct_daily_weather order by place, observation_date", built)
    assert [(r["place"], r["observation_date"]) for r in rows] == [
        (place, day) for place in sorted(PLACES) for day in SPRING.days()
    ]
    for row in rows:
        hours = served_hours(server.url, str(row["place"]), row["observation_date"], built.timezone)  # type: ignore[arg-type]
        for name, value in expected_day(hours).items():
            assert row[name] == pytest.approx(value, abs=0.006), (row["place"], name)


def test_the_summary_mart_describes_every_place_and_day(built: PhloSettings) -> None:
    rows = rows_of("select * from marts.mrt_daily_weather_summary order by all", built)
    assert len(rows) == len(PLACES) * len(SPRING)
    for row in rows:
        assert row["weather_description"], row
        assert row["is_wet_day"] == (float(row["precipitation_total_mm"]) >= 1.0)  # type: ignore[arg-type]
        assert row["is_complete_day"] is True
    # The insights mart ran too (weather's `+` reaches it): no glucose here, so no rows.
    assert query("select count(*) from marts.mrt_glucose_weather_daily", built).rows == [(0,)]


def test_the_autumn_day_has_25_hours_and_its_values(
    make: Callable[..., PhloSettings], server: SampleOpenMeteoServer
) -> None:
    settings = make()
    run("dlt_weather_observations", AUTUMN, settings)
    run("stg_weather_observations+", AUTUMN, settings)
    rows = rows_of(
        "select * from silver.fct_daily_weather where place = 'berlin' order by observation_date",
        settings,
    )
    assert [(r["hours_in_day"], r["hours_observed"]) for r in rows] == [
        (24, 24),
        (25, 25),
        (24, 24),
    ]
    for row in rows:
        hours = served_hours(server.url, "berlin", row["observation_date"], settings.timezone)  # type: ignore[arg-type]
        for name, value in expected_day(hours).items():
            assert row[name] == pytest.approx(value, abs=0.006), (row["observation_date"], name)


@pytest.mark.slow
def test_order_and_repetition_do_not_change_the_result(
    built: PhloSettings, make: Callable[..., PhloSettings]
) -> None:
    settings = make()
    for day in reversed(list(SPRING.days())):
        run(EVERYTHING, DayRange(day, day + dt.timedelta(days=1)), settings)
    assert snapshot(settings) == snapshot(built)
    run(EVERYTHING, parse_day_range("2024-03-31"), settings)
    assert snapshot(settings) == snapshot(built)


def _count_by_place(settings: PhloSettings) -> dict[str, dict[str, int]]:
    """Rows per place in every table that has places (the marts' too)."""
    counts: dict[str, dict[str, int]] = {}
    for table in TABLES:
        rows = query(f"select place, count(*) from {table} group by all", settings).rows
        counts[table] = dict(rows)
    return counts


@pytest.mark.slow  # keeps `make test` under 15 minutes; CI runs it
def test_a_place_no_longer_listed_keeps_its_days_in_every_table(
    built: PhloSettings, make: Callable[..., PhloSettings], server: SampleOpenMeteoServer
) -> None:
    """WEATHER_PLACES loses oslo (as the README's example of changing places does, or a typo
    in its name): a run fetches berlin alone, so it replaces berlin's hours alone. Oslo's days
    stay in the raw table and in every dbt layer, and every table is what a clean build of the
    same fetched days (both places) gives."""
    settings = make()
    run(EVERYTHING, SPRING, settings)
    berlin_only = weather_settings(
        settings.phlo_home, server.url, weather_places="berlin=52.52,13.41"
    )
    run(EVERYTHING, SPRING, berlin_only)
    counts = _count_by_place(berlin_only)
    hours = 24 + 23 + 24
    assert counts["raw.weather_observations"] == {"berlin": hours, "oslo": hours}
    for table in TABLES[2:4]:
        assert counts[table] == {"berlin": hours, "oslo": hours}, table
    for table in TABLES[4:]:
        assert counts[table] == {"berlin": len(SPRING), "oslo": len(SPRING)}, table
    assert snapshot(berlin_only) == snapshot(built)


def test_the_shrink_guard_weighs_only_the_places_a_run_fetched(
    make: Callable[..., PhloSettings], server: SampleOpenMeteoServer
) -> None:
    """Dropping a place is no shrink, even with the strictest limit; a fetched place whose
    source answers empty still is, and stops the write."""
    day = parse_day_range("2024-03-30")
    settings = make()
    run("dlt_weather_observations", day, settings)
    before = snapshot_raw(settings)
    strict = {"weather_places": "berlin=52.52,13.41", "phlo_max_shrink_pct": 0}
    run("dlt_weather_observations", day, weather_settings(settings.phlo_home, server.url, **strict))
    assert snapshot_raw(settings) == before

    def nothing(lat: float, lon: float, hour: dt.datetime) -> Mapping[str, float | None]:
        return {}

    with SampleOpenMeteoServer(values=nothing) as empty:
        outcomes = materialize(
            "dlt_weather_observations",
            day,
            weather_settings(settings.phlo_home, empty.url, **strict),
        )
    assert not outcomes[0].success
    assert "dlt_weather_observations:no_unexpected_shrink" in outcomes[0].failed_checks
    assert any("held 24 rows and would keep 0" in e for e in outcomes[0].errors), outcomes
    assert snapshot_raw(settings) == before


def test_a_source_failure_leaves_every_table_as_it_was(
    built: PhloSettings, server: SampleOpenMeteoServer
) -> None:
    before = snapshot(built)
    server.fail_next(3, status=503)  # every attempt (HTTP_MAX_ATTEMPTS=3) at the first place
    outcomes = materialize(EVERYTHING, SPRING, built)
    assert [(o.location, o.success, o.skipped) for o in outcomes] == [
        ("weather", False, False),
        ("insights", False, True),
    ]
    assert any("Open-Meteo archive unavailable" in e for e in outcomes[0].errors)
    assert snapshot(built) == before


def _with_bad_hours(
    bad: Mapping[dt.datetime, Mapping[str, object]],
) -> Callable[[float, float, dt.datetime], Mapping[str, object]]:
    """Sample values, with `bad` ones at some hours of berlin only."""

    def values(lat: float, lon: float, hour: dt.datetime) -> Mapping[str, object]:
        wrong = bad.get(hour, {}) if (lat, lon) == PLACES["berlin"] else {}
        return {**hourly_values(lat, lon, hour), **wrong}

    return values


def test_invalid_hours_are_rejected_and_too_many_block_the_day(
    make: Callable[..., PhloSettings],
) -> None:
    day = parse_day_range("2024-03-30")
    start, _ = utc_bounds(day, ZoneInfo(TIMEZONE))
    one_bad = {start + dt.timedelta(hours=5): {"temperature_2m": 99.5}}
    with SampleOpenMeteoServer(values=_with_bad_hours(one_bad)) as bad_server:
        settings = make(bad_server.url)
        run("dlt_weather_observations", day, settings)
    assert query("select count(*) from raw.weather_observations", settings).rows == [(47,)]
    [(place, reason)] = query(
        "select place, reason from raw.weather_observations_rejected", settings
    ).rows
    assert place == "berlin"
    assert "temperature_2m" in reason and "99.5" in reason

    before = snapshot_raw(settings)
    # 3 of berlin's and oslo's 48 hours: 6.25% > WEATHER_MAX_REJECTED_PCT (5).
    many_bad = {start + dt.timedelta(hours=h): {"relative_humidity_2m": 140} for h in range(3)}
    with SampleOpenMeteoServer(values=_with_bad_hours(many_bad)) as bad_server:
        blocked = weather_settings(settings.phlo_home, bad_server.url)
        outcomes = materialize("dlt_weather_observations", day, blocked)
    assert not outcomes[0].success
    assert "dlt_weather_observations:rejected_rows_within_limit" in outcomes[0].failed_checks
    assert snapshot_raw(settings) == before


def test_numbers_beyond_any_range_are_rejected_hours_counted_once(
    make: Callable[..., PhloSettings],
) -> None:
    """1e30 where a whole number is due overflowed the whole run; a temperature that is not a
    number (NaN, a string) was counted as rejected and again as missing. Each is one rejected
    hour now, and the day misses nothing."""
    day = parse_day_range("2024-03-30")
    start, _ = utc_bounds(day, ZoneInfo(TIMEZONE))
    bad: dict[dt.datetime, dict[str, object]] = {
        start + dt.timedelta(hours=2): {"relative_humidity_2m": 1e30},
        start + dt.timedelta(hours=3): {"weather_code": -1e30},
        start + dt.timedelta(hours=4): {"temperature_2m": "NaN"},
        start + dt.timedelta(hours=5): {"temperature_2m": float("nan")},  # JSON's NaN token
        start + dt.timedelta(hours=6): {"pressure_msl": float("-inf")},  # -Infinity
    }
    with SampleOpenMeteoServer(values=_with_bad_hours(bad)) as bad_server:
        settings = make(
            bad_server.url, weather_places="berlin=52.52,13.41", weather_max_rejected_pct=25
        )
        [outcome] = run("dlt_weather_observations", day, settings)
    rejected = query(
        "select observed_at, reason from raw.weather_observations_rejected order by 1", settings
    ).rows
    assert [moment for moment, _ in rejected] == sorted(bad)
    reasons = [reason for _, reason in rejected]
    assert reasons[0].startswith("relative_humidity_2m: ") and "1e+30" in reasons[0]
    assert reasons[1].startswith("weather_code: ") and "-1e+30" in reasons[1]
    assert [r.split(":")[0] for r in reasons[2:]] == ["temperature_2m"] * 2 + ["pressure_msl"]
    assert query("select count(*) from raw.weather_observations", settings).rows == [(19,)]
    summary = outcome.summaries["dlt_weather_observations"]
    assert "19 hourly observations loaded for 1 place(s), 5 rejected, 0 hours missing" in summary
    assert outcome.failed_checks == []  # hours_complete: no hour is missing, five are rejected


def snapshot_raw(settings: PhloSettings) -> dict[str, list[tuple]]:
    return {
        table: sorted(query(f"select * from {table}", settings).rows, key=repr)
        for table in TABLES[:2]
    }


def test_the_latest_days_come_from_the_forecast_api(make: Callable[..., PhloSettings]) -> None:
    """The archive lags: yesterday is asked of /v1/forecast (the archive serves nulls there)."""
    yesterday = today(ZoneInfo(TIMEZONE)) - dt.timedelta(days=1)
    with SampleOpenMeteoServer() as fresh:
        settings = make(fresh.url, weather_places="berlin=52.52,13.41")
        outcomes = run(
            "dlt_weather_observations",
            DayRange(yesterday, yesterday + dt.timedelta(days=1)),
            settings,
        )
        paths = [path for path, _ in fresh.requests]
    assert paths and set(paths) <= {"/v1/archive", "/v1/forecast"}
    assert "/v1/forecast" in paths
    sources = query(
        "select source, count(*) from raw.weather_observations group by all", settings
    ).rows
    assert dict(sources).get("forecast", 0) > 0
    assert sum(n for _, n in sources) in (23, 24, 25)
    assert outcomes[0].failed_checks == []


def test_the_cross_domain_mart_sets_each_glucose_day_beside_its_weather(
    make: Callable[..., PhloSettings],
) -> None:
    from locations.nightscout.sample_server import SampleNightscoutServer
    from tests.conftest import TEST_SECRET

    with SampleNightscoutServer(timezone=TIMEZONE, api_secret=TEST_SECRET) as nightscout:
        settings = make(
            nightscout_url=nightscout.url,
            nightscout_api_secret=TEST_SECRET,
            insights_weather_place="oslo",
        )
        run(EVERYTHING, SPRING, settings)
        outcomes = run("dlt_glucose_entries+", SPRING, settings)
    assert [o.location for o in outcomes] == ["nightscout", "insights"]
    mart = rows_of("select * from marts.mrt_glucose_weather_daily order by reading_date", settings)
    glucose = rows_of(
        "select * from silver.fct_daily_glucose_metrics order by reading_date", settings
    )
    weather = {
        r["observation_date"]: r
        for r in rows_of("select * from silver.fct_daily_weather where place = 'oslo'", settings)
    }
    assert [r["reading_date"] for r in mart] == [r["reading_date"] for r in glucose]
    assert len(mart) == len(SPRING)
    for row, day in zip(mart, glucose, strict=True):
        assert row["weather_place"] == "oslo"
        for name in ("reading_count", "tir_pct", "mean_glucose_mg_dl", "gmi_pct", "cv_pct"):
            assert row[name] == day[name], name
        same_day = weather[row["reading_date"]]
        for name in ("temperature_mean_c", "precipitation_total_mm", "dominant_weather_code"):
            assert row[name] == same_day[name], name
        assert row["weather_hours_observed"] == same_day["hours_observed"]
