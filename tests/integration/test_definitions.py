"""The nightscout code location loads as Dagster sees it: assets, checks, jobs, schedule."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from dagster import AssetKey, build_schedule_context

from phlo_core.settings import PhloSettings, use_settings
from phlo_core.workspace import load_definitions, location_refs

MODELS = {
    "stg_glucose_entries",
    "fct_glucose_readings",
    "fct_daily_glucose_metrics",
    "mrt_glucose_readings",
    "mrt_glucose_hourly_patterns",
    "mrt_glucose_overview",
}


def test_the_location_defines_every_asset_and_its_checks(
    make_settings: Callable[..., PhloSettings],
) -> None:
    settings = make_settings(phlo_timezone="Europe/Oslo")
    use_settings(settings)
    [ref] = location_refs(settings)
    defs = load_definitions(ref)
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {
        "dlt_glucose_entries"
    } | MODELS
    checks_by_asset: dict[str, int] = {}
    for check in graph.asset_check_keys:
        name = check.asset_key.to_user_string()
        checks_by_asset[name] = checks_by_asset.get(name, 0) + 1
    assert set(checks_by_asset) == {"dlt_glucose_entries"} | MODELS  # every model is tested
    assert graph.get(AssetKey("stg_glucose_entries")).parent_keys == {
        AssetKey("dlt_glucose_entries")
    }

    schedule = defs.resolve_schedule_def("nightscout_daily_schedule")
    midnight_past = dt.datetime(2024, 3, 10, 1, 15, tzinfo=settings.timezone)
    [request] = list(
        schedule.evaluate_tick(
            build_schedule_context(
                scheduled_execution_time=midnight_past, repository_def=defs.get_repository_def()
            )
        ).run_requests
        or []
    )
    assert request.partition_key == "2024-03-09"
