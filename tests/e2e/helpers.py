"""Helpers for end-to-end tests: whole-lakehouse snapshots and metrics computed independently,
and a run launched over Dagster's GraphQL API (the deployment tests)."""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time
import urllib.request
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from phlo_core.calendar import DayRange, epoch_ms, minutes_in_day, utc_bounds
from phlo_core.lakehouse.connect import query
from phlo_core.runlogs.model import LEVELS, LogFilter
from phlo_core.runlogs.read import read_entries
from phlo_core.runlogs.stores import LogSource
from phlo_core.settings import PhloSettings

TABLES = [
    "raw.glucose_entries",
    "raw.glucose_entries_rejected",
    "bronze.stg_glucose_entries",
    "silver.fct_glucose_readings",
    "silver.fct_daily_glucose_metrics",
    "gold.mrt_glucose_readings",
    "marts.mrt_glucose_hourly_patterns",
    "marts.mrt_glucose_overview",
    "marts.mrt_glucose_risk_daily",
    "marts.mrt_glucose_episodes",
    "marts.mrt_glucose_episodes_daily",
    "marts.mrt_glucose_report_window",
    "marts.mrt_glucose_report_profile",
]


def snapshot(settings: PhloSettings) -> dict[str, list[tuple]]:
    """Every table's rows, sorted, so two lakehouses can be compared exactly."""
    return {
        table: sorted(query(f"select * from {table}", settings).rows, key=repr) for table in TABLES
    }


def report_window_row(settings: PhloSettings, start: dt.date, end: dt.date) -> dict:
    """The glucose report view's one row for the window start..end (DuckDB variables), read
    straight from the lakehouse."""
    from phlo_core.lakehouse.connect import connect

    con = connect(settings, read_only=True)
    try:
        con.execute("set variable glucose_report_start = ?", [start])
        con.execute("set variable glucose_report_end = ?", [end])
        cursor = con.execute("select * from marts.mrt_glucose_report_window")
        names = [d[0] for d in cursor.description or []]
        return dict(zip(names, cursor.fetchone() or (), strict=True))
    finally:
        con.close()


def served_readings(url: str, secret_sha1: str, day: dt.date, tz: ZoneInfo) -> dict[int, int]:
    """The day's valid sensor glucose values by epoch ms, fetched straight from the server in
    one request and cleaned by the rules in DESIGN.md, independently of Phlo's client and
    pipeline."""
    start, end = utc_bounds(DayRange(day, day + dt.timedelta(days=1)), tz)
    response = httpx.get(
        f"{url}/api/v1/entries.json",
        params={
            "count": 100_000,
            "find[date][$gte]": epoch_ms(start),
            "find[date][$lt]": epoch_ms(end),
        },
        headers={"api-secret": secret_sha1},
    )
    response.raise_for_status()
    by_date: dict[int, int] = {}
    for entry in sorted(response.json(), key=lambda e: (e["date"], e["_id"])):
        if entry["type"] == "sgv" and entry["sgv"] >= 39:
            by_date.setdefault(entry["date"], entry["sgv"])
    return by_date


def expected_hourly_profile(readings: dict[int, int], tz: ZoneInfo) -> dict[int, dict[str, float]]:
    """Per local hour: count, mean, continuous percentiles and TIR, as the AGP defines them."""
    by_hour: dict[int, list[int]] = {}
    for epoch, value in readings.items():
        hour = dt.datetime.fromtimestamp(epoch / 1000, tz).hour
        by_hour.setdefault(hour, []).append(value)
    profile = {}
    for hour, values in by_hour.items():
        ventiles = statistics.quantiles(values, n=20, method="inclusive")
        quartiles = statistics.quantiles(values, n=4, method="inclusive")
        profile[hour] = {
            "reading_count": len(values),
            "mean_glucose_mg_dl": statistics.fmean(values),
            "p05_glucose_mg_dl": ventiles[0],
            "p25_glucose_mg_dl": quartiles[0],
            "p50_glucose_mg_dl": quartiles[1],
            "p75_glucose_mg_dl": quartiles[2],
            "p95_glucose_mg_dl": ventiles[-1],
            "tir_pct": 100.0 * sum(1 for v in values if 70 <= v <= 180) / len(values),
        }
    return profile


def expected_daily_metrics(
    values: list[int], day: dt.date, tz: ZoneInfo
) -> dict[str, float | None]:
    n = len(values)
    mean = statistics.fmean(values)
    sd = statistics.stdev(values)
    expected = minutes_in_day(day, tz) / 5
    coverage = min(100.0, 100.0 * n / expected)

    def pct(predicate) -> float:  # noqa: ANN001
        return 100.0 * sum(1 for v in values if predicate(v)) / n

    return {
        "reading_count": n,
        "coverage_pct": coverage,
        "mean_glucose_mg_dl": mean,
        "sd_glucose_mg_dl": sd,
        "cv_pct": 100 * sd / mean,
        "min_glucose_mg_dl": min(values),
        "max_glucose_mg_dl": max(values),
        "median_glucose_mg_dl": statistics.median(values),
        "tir_pct": pct(lambda v: 70 <= v <= 180),
        "tbr_pct": pct(lambda v: v < 70),
        "tbr_very_low_pct": pct(lambda v: v < 54),
        "tar_pct": pct(lambda v: v > 180),
        "tar_very_high_pct": pct(lambda v: v > 250),
        "gmi_pct": 3.31 + 0.02392 * mean if coverage >= 70 else None,
    }


def assert_same_entries(source: LogSource, storage: LogSource, run_id: str) -> None:
    """Two readers of one instance (phlo's SQL and Dagster's storage classes) give the same
    entries whatever the filter, and resolve a run id prefix alike."""
    for filters in [
        LogFilter(limit=1000),
        LogFilter(limit=7),
        LogFilter(level=LEVELS["WARNING"]),
        LogFilter(job="glucose_pipeline", level=LEVELS["INFO"]),
        LogFilter(asset="stg_glucose_entries"),
        LogFilter(run_ids=[run_id], since=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)),
    ]:
        mine = read_entries(source, filters)
        assert mine, filters
        assert mine == read_entries(storage, filters), filters
    assert source.resolve(run_id[:8]) == storage.resolve(run_id[:8]) == run_id


def gql(url: str, text: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    body = json.dumps({"query": text, "variables": variables or {}}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.load(response)
    assert "errors" not in answer, answer
    return answer["data"]


LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on InvalidSubsetError { message } } }"""
RUN = """query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"""


def launch_glucose_day(url: str, day: dt.date, timeout: float = 300) -> tuple[str, str]:
    """glucose_pipeline's ingestion and staging for `day`, launched over GraphQL at `url`
    (as the instance's run launcher runs it); its run id and final status ("" if still
    running after `timeout` seconds)."""
    params = {
        "selector": {
            "repositoryLocationName": "nightscout",
            "repositoryName": "__repository__",
            "jobName": "glucose_pipeline",
            "assetSelection": [
                {"path": ["dlt_glucose_entries"]},
                {"path": ["stg_glucose_entries"]},
            ],
        },
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": day.isoformat()}]},
    }
    launched = gql(url, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    status, deadline = "", time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = gql(url, RUN, {"id": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(1)
    return run_id, status
