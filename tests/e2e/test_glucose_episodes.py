"""The clinical marts (GRI, consensus episodes, the report's window) end to end: hand-built days
served over Nightscout's HTTP API, the pipeline run by Dagster, the marts compared with known
episodes and with an independent computation (tests/e2e/cgm_reference.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterator
from zoneinfo import ZoneInfo

import pytest

from locations.nightscout.sample_server import SampleNightscoutServer
from phlo_core.calendar import parse_day_range
from phlo_core.lakehouse.connect import query
from phlo_core.runs.engine import materialize
from phlo_core.settings import PhloSettings
from tests.conftest import TEST_SECRET
from tests.e2e.cgm_reference import Reading, episodes, gri
from tests.e2e.helpers import report_window_row, served_readings

TZ = ZoneInfo("America/New_York")
# 2024-03-10 is New York's spring daylight-saving day (23 hours).
DAYS = parse_day_range("2024-03-09..2024-03-11")
FIVE_MINUTES_MS = 5 * 60 * 1000
OFFSET_MS = 37_000
BASELINE = 120


def local(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=TZ)


# Local wall-clock spans [from, to) of the readings' values; 120 mg/dL elsewhere; no readings
# in the gap. Each comment says the episode the span makes.
SPANS: list[tuple[str, str, int | None]] = [
    ("2024-03-09T08:00", "2024-03-09T08:15", 65),  # exactly 15 minutes < 70: an episode
    ("2024-03-09T09:00", "2024-03-09T09:10", 65),  # 10 minutes: none
    ("2024-03-09T11:00", "2024-03-09T11:25", 62),  # one episode: a 10-minute return
    ("2024-03-09T11:25", "2024-03-09T11:35", 90),  # does not end it
    ("2024-03-09T11:35", "2024-03-09T11:55", 62),
    ("2024-03-09T14:00", "2024-03-09T14:20", 60),  # ended by the gap, not recovered
    ("2024-03-09T14:20", "2024-03-09T15:10", None),  # 55 minutes between readings
    ("2024-03-09T15:10", "2024-03-09T15:30", 60),  # a second episode after the gap
    ("2024-03-09T16:00", "2024-03-09T16:25", 50),  # level 1 and level 2
    ("2024-03-09T23:40", "2024-03-10T00:25", 200),  # across midnight: counts for 03-09
    ("2024-03-10T01:30", "2024-03-10T04:35", 60),  # across the DST change: 125 real minutes
    ("2024-03-10T12:00", "2024-03-10T13:30", 260),  # 90 minutes > 250: extended hyper
    ("2024-03-10T13:30", "2024-03-10T14:00", 220),
    ("2024-03-10T18:00", "2024-03-10T18:15", 62),  # exactly 15 minutes back in range
    ("2024-03-10T18:15", "2024-03-10T18:30", 90),  # ends the first:
    ("2024-03-10T18:30", "2024-03-10T18:45", 62),  # two episodes
]

# (kind, local start, minutes, recovered, local day it counts for)
EXPECTED = [
    ("hypo_level_1", "2024-03-09T08:00:37", 15, True, "2024-03-09"),
    ("hypo_level_1", "2024-03-09T11:00:37", 55, True, "2024-03-09"),
    ("hypo_level_1", "2024-03-09T14:00:37", 20, False, "2024-03-09"),
    ("hypo_level_1", "2024-03-09T15:10:37", 20, True, "2024-03-09"),
    ("hypo_level_1", "2024-03-09T16:00:37", 25, True, "2024-03-09"),
    ("hypo_level_2", "2024-03-09T16:00:37", 25, True, "2024-03-09"),
    ("hyper_level_1", "2024-03-09T23:40:37", 45, True, "2024-03-09"),
    ("hypo_extended", "2024-03-10T01:30:37", 125, True, "2024-03-10"),
    ("hypo_level_1", "2024-03-10T01:30:37", 125, True, "2024-03-10"),
    ("hyper_extended", "2024-03-10T12:00:37", 120, True, "2024-03-10"),
    ("hyper_level_1", "2024-03-10T12:00:37", 120, True, "2024-03-10"),
    ("hyper_level_2", "2024-03-10T12:00:37", 90, True, "2024-03-10"),
    ("hypo_level_1", "2024-03-10T18:00:37", 15, True, "2024-03-10"),
    ("hypo_level_1", "2024-03-10T18:30:37", 15, True, "2024-03-10"),
]


def value_at(moment: dt.datetime) -> int | None:
    wall = moment.astimezone(TZ).replace(tzinfo=None)
    for start, end, value in SPANS:
        if dt.datetime.fromisoformat(start) <= wall < dt.datetime.fromisoformat(end):
            return value
    return BASELINE


def hand_built(lo: int, hi: int) -> Iterator[dict]:
    """Nightscout sgv entries every 5 minutes (37 s past the mark) with the SPANS' values."""
    first = ((lo - OFFSET_MS) // FIVE_MINUTES_MS) * FIVE_MINUTES_MS + OFFSET_MS
    for epoch in range(first if first >= lo else first + FIVE_MINUTES_MS, hi, FIVE_MINUTES_MS):
        moment = dt.datetime.fromtimestamp(epoch / 1000, dt.UTC)
        value = value_at(moment)
        if value is None:
            continue
        offset = moment.astimezone(TZ).utcoffset() or dt.timedelta(0)
        yield {
            "_id": hashlib.sha1(str(epoch).encode()).hexdigest()[:24],
            "type": "sgv",
            "date": epoch,
            "dateString": moment.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "sysTime": moment.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "utcOffset": int(offset.total_seconds() // 60),
            "device": "test-sensor",
            "sgv": value,
            "direction": "Flat",
            "trend": 4,
            "noise": 1,
        }


def build(
    make_settings: Callable[..., PhloSettings], server: SampleNightscoutServer, days: str
) -> PhloSettings:
    settings = make_settings(
        "phlo",
        phlo_timezone=TZ.key,
        nightscout_url=server.url,
        nightscout_api_secret=TEST_SECRET,
    )
    outcomes = materialize("dlt_glucose_entries+", parse_day_range(days), settings)
    assert outcomes and all(o.success for o in outcomes), [o.errors for o in outcomes]
    return settings


@pytest.fixture(scope="module")
def hand_built_lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhloSettings]:
    from phlo_core.settings import load_settings

    with SampleNightscoutServer(
        timezone=TZ.key, api_secret=TEST_SECRET, entries=hand_built
    ) as server:
        settings = load_settings(
            phlo_home=tmp_path_factory.mktemp("episodes") / "phlo",
            phlo_timezone=TZ.key,
            nightscout_url=server.url,
            nightscout_api_secret=TEST_SECRET,
        )
        outcomes = materialize("dlt_glucose_entries+", DAYS, settings)
        assert outcomes and all(o.success for o in outcomes), [o.errors for o in outcomes]
        yield settings


def rows(sql: str, settings: PhloSettings) -> list[dict]:
    result = query(sql, settings)
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def test_the_hand_built_episodes_are_found(hand_built_lake: PhloSettings) -> None:
    found = rows(
        "select kind, start_at_local, duration_minutes, recovered, start_date "
        "from marts.mrt_glucose_episodes order by start_at, kind",
        hand_built_lake,
    )
    assert [
        (
            r["kind"],
            r["start_at_local"].isoformat(),
            r["duration_minutes"],
            r["recovered"],
            r["start_date"].isoformat(),
        )
        for r in found
    ] == EXPECTED


def test_the_episodes_equal_an_independent_computation(hand_built_lake: PhloSettings) -> None:
    readings = [
        Reading(moment, value)
        for epoch in range(
            int(local("2024-03-09T00:00").timestamp() * 1000),
            int(local("2024-03-12T00:00").timestamp() * 1000),
            FIVE_MINUTES_MS,
        )
        for moment in [dt.datetime.fromtimestamp((epoch + OFFSET_MS) / 1000, dt.UTC)]
        for value in [value_at(moment)]
        if value is not None
    ]
    expected = episodes(readings)
    found = rows(
        "select * from marts.mrt_glucose_episodes order by start_at, kind", hand_built_lake
    )
    assert [
        (
            r["kind"],
            r["start_at"],
            r["end_at"],
            r["recovered"],
            r["reading_count"],
            r["nadir_glucose_mg_dl"],
            r["peak_glucose_mg_dl"],
        )
        for r in found
    ] == [(e.kind, e.start, e.end, e.recovered, e.reading_count, e.nadir, e.peak) for e in expected]


def test_daily_counts_follow_the_start_day(hand_built_lake: PhloSettings) -> None:
    counts = {
        r["reading_date"].isoformat(): {k: v for k, v in r.items() if k.endswith("_count")}
        for r in rows("select * from marts.mrt_glucose_episodes_daily", hand_built_lake)
    }
    zero = dict.fromkeys(
        [f"{kind}_count" for kind in ("hypo_level_1", "hypo_level_2", "hypo_extended")]
        + [f"{kind}_count" for kind in ("hyper_level_1", "hyper_level_2", "hyper_extended")],
        0,
    )
    assert counts == {
        "2024-03-09": {
            **zero,
            "hypo_level_1_count": 5,
            "hypo_level_2_count": 1,
            "hyper_level_1_count": 1,
        },
        "2024-03-10": {
            **zero,
            "hypo_level_1_count": 3,
            "hypo_extended_count": 1,
            "hyper_level_1_count": 1,
            "hyper_level_2_count": 1,
            "hyper_extended_count": 1,
        },
        "2024-03-11": zero,
    }


def test_gri_per_day_equals_an_independent_computation(hand_built_lake: PhloSettings) -> None:
    by_day: dict[dt.date, list[int]] = {}
    for epoch in range(
        int(local("2024-03-09T00:00").timestamp() * 1000),
        int(local("2024-03-12T00:00").timestamp() * 1000),
        FIVE_MINUTES_MS,
    ):
        moment = dt.datetime.fromtimestamp((epoch + OFFSET_MS) / 1000, dt.UTC)
        value = value_at(moment)
        if value is not None:
            by_day.setdefault(moment.astimezone(TZ).date(), []).append(value)
    found = {
        r["reading_date"]: r
        for r in rows("select * from marts.mrt_glucose_risk_daily", hand_built_lake)
    }
    assert sorted(found) == sorted(by_day)
    for day, values in by_day.items():
        for name, value in gri(values).items():
            assert found[day][name] == pytest.approx(value, abs=0.006), (day, name)
    # 2024-03-10 (276 readings): 25 at 60 and 6 at 62 (low), 18 at 260 (very high), 6 at 220
    # and 5 at 200 after midnight (high): GRI = 3.0 x 0.8 x low + 1.6 x (very high + 0.5 x high).
    assert found[dt.date(2024, 3, 10)]["gri"] == pytest.approx(
        100 * (3.0 * 0.8 * 31 / 276 + 1.6 * (18 + 0.5 * 11) / 276), abs=0.006
    )


def test_the_report_window_pools_its_days(hand_built_lake: PhloSettings) -> None:
    """The report's view for a window set by DuckDB variables: the window's readings pooled,
    the episodes that started in it."""
    window = report_window_row(hand_built_lake, dt.date(2024, 3, 10), dt.date(2024, 3, 11))
    values = [
        value_at(moment)
        for epoch in range(
            int(local("2024-03-10T00:00").timestamp() * 1000),
            int(local("2024-03-12T00:00").timestamp() * 1000),
            FIVE_MINUTES_MS,
        )
        for moment in [dt.datetime.fromtimestamp((epoch + OFFSET_MS) / 1000, dt.UTC)]
    ]
    present = [v for v in values if v is not None]
    assert window["window_days"] == 2
    assert window["reading_count"] == len(present) == 276 + 288
    assert window["expected_reading_count"] == 276 + 288
    assert window["cgm_active_pct"] == 100
    assert window["gri"] == pytest.approx(gri(present)["gri"], abs=0.006)
    assert window["tir_pct"] == pytest.approx(
        100 * sum(1 for v in present if 70 <= v <= 180) / len(present), abs=0.006
    )
    assert (window["hypo_level_1_count"], window["hypo_extended_count"]) == (3, 1)
    assert (window["hyper_level_1_count"], window["hyper_extended_count"]) == (1, 1)


@pytest.mark.slow
def test_sample_data_episodes_equal_an_independent_computation(
    make_settings: Callable[..., PhloSettings],
) -> None:
    """14 days of the sample person (night lows, meals, a two-hour sensor gap every fifth day,
    error codes, duplicate uploads), served and built: every episode as computed independently
    from what the server serves."""
    with SampleNightscoutServer(timezone=TZ.key, api_secret=TEST_SECRET) as server:
        days = "2024-01-01..2024-01-14"
        settings = build(make_settings, server, days)
        secret_sha1 = hashlib.sha1(TEST_SECRET.encode()).hexdigest()
        readings = [
            Reading(dt.datetime.fromtimestamp(epoch / 1000, dt.UTC), value)
            for day in parse_day_range(days).days()
            for epoch, value in served_readings(server.url, secret_sha1, day, TZ).items()
        ]
    expected = episodes(readings)
    assert {e.kind for e in expected} >= {"hypo_level_1", "hyper_level_1", "hyper_level_2"}
    found = rows("select * from marts.mrt_glucose_episodes order by start_at, kind", settings)
    assert [(r["kind"], r["start_at"], r["end_at"], r["reading_count"]) for r in found] == [
        (e.kind, e.start, e.end, e.reading_count) for e in expected
    ]
