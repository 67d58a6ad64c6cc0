"""Code locations plug in through the workspace file: each loads on its own with only its own
settings, the workspace loads them all, and selections find names in whichever defines them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from dagster import AssetKey

from phlo_core.needs import CATALOG_LITE
from phlo_core.runs.engine import without_idle
from phlo_core.runs.selection import SelectionError, plan_selection
from phlo_core.settings import PhloSettings
from phlo_core.workspace import load_definitions, location_ref, location_refs

WEATHER_ASSETS = {
    "dlt_weather_observations",
    "stg_weather_observations",
    "fct_weather_readings",
    "fct_daily_weather",
    "mrt_daily_weather_summary",
    "weather_published_marts",
}


def workspace(tmp_path: Path, *locations: tuple[str, str]) -> Path:
    lines = ["load_from:"]
    for name, module in locations:
        lines += [
            "  - python_module:",
            f"      module_name: {module}",
            f"      location_name: {name}",
        ]
    path = tmp_path / "workspace.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_weather_location_loads_with_only_its_own_settings(
    make_settings: Callable[..., PhloSettings], tmp_path: Path
) -> None:
    """No Nightscout setting anywhere: the weather location does not need one."""
    only_weather = workspace(tmp_path, ("weather", "locations.weather.definitions"))
    settings = make_settings(phlo_workspace=only_weather, weather_places="oslo=59.91,10.75")
    [ref] = location_refs(settings)
    defs = load_definitions(ref, settings)
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.materializable_asset_keys} == WEATHER_ASSETS
    checked = {check.asset_key.to_user_string() for check in graph.asset_check_keys}
    # Every asset is tested; publishing verifies its copy before it swaps it in.
    assert checked == WEATHER_ASSETS - {"weather_published_marts"}
    assert graph.get(AssetKey("stg_weather_observations")).parent_keys == {
        AssetKey("dlt_weather_observations")
    }
    # Marts are rebuilt whole: not partitioned; the daily layers are.
    assert graph.get(AssetKey("mrt_daily_weather_summary")).partitions_def is None
    assert graph.get(AssetKey("fct_daily_weather")).partitions_def is not None
    assert defs.resolve_job_def("weather_pipeline").name == "weather_pipeline"
    assert defs.resolve_schedule_def("weather_pipeline_schedule").cron_schedule == "20 1 * * *"
    assert plan_selection("dlt_weather_observations+", settings)[0].location.name == "weather"


def test_the_workspace_loads_every_location(make_settings: Callable[..., PhloSettings]) -> None:
    settings = make_settings()
    names = [ref.name for ref in location_refs(settings)]
    assert names == ["nightscout", "weather", "insights", "lakehouse"]
    jobs = {
        name: {
            job.name
            for job in load_definitions(
                location_ref(settings, name), settings
            ).resolve_all_job_defs()
        }
        for name in names
    }
    assert "glucose_pipeline" in jobs["nightscout"]
    assert "weather_pipeline" in jobs["weather"]
    assert "insights_pipeline" in jobs["insights"]
    # One maintenance job for the whole lakehouse, in no domain's location.
    assert [n for n, found in jobs.items() if "lakehouse_maintenance" in found] == ["lakehouse"]


def test_a_selection_reaches_the_locations_that_read_it(
    make_settings: Callable[..., PhloSettings], tmp_path: Path
) -> None:
    settings = make_settings()

    def planned(selection: str) -> list[tuple[str, list[str]]]:
        return [
            (plan.location.name, sorted(k.to_user_string() for k in plan.keys))
            for plan in plan_selection(selection, settings)
        ]

    # The catalog asset comes after every project's last models, in the lakehouse location.
    catalog = ("lakehouse", ["datahub_metadata"])
    assert planned("dlt_weather_observations+") == [
        ("weather", sorted(WEATHER_ASSETS)),
        ("insights", ["insights_published_marts", "mrt_glucose_weather_daily"]),
        catalog,
    ]
    glucose = planned("fct_daily_glucose_metrics+")
    assert [location for location, _ in glucose] == ["nightscout", "insights", "lakehouse"]
    # Dependency order, whatever order the workspace file lists the locations in.
    reversed_file = workspace(
        tmp_path,
        ("insights", "locations.insights.definitions"),
        ("weather", "locations.weather.definitions"),
        ("nightscout", "locations.nightscout.definitions"),
    )
    plans = plan_selection(
        "mrt_glucose_weather_daily,dlt_weather_observations,dlt_glucose_entries",
        make_settings(phlo_workspace=reversed_file),
    )
    order = [plan.location.name for plan in plans]
    assert order.index("insights") > max(order.index("weather"), order.index("nightscout"))
    assert planned("mrt_glucose_weather_daily") == [("insights", ["mrt_glucose_weather_daily"])]
    assert planned("mrt_glucose_weather_daily+") == [
        ("insights", ["insights_published_marts", "mrt_glucose_weather_daily"]),
        catalog,
    ]


def test_a_run_of_the_catalog_asset_alone_is_not_planned_until_the_home_has_a_catalog(
    make_settings: Callable[..., PhloSettings],
) -> None:
    """It would do nothing but cost a run; once `phlo catalog sync` made the home's catalog
    (or DATAHUB_GMS_URL names a server) it runs after the models."""
    settings = make_settings()
    plans = plan_selection("mrt_glucose_weather_daily+", settings)

    def kept(settings: PhloSettings) -> list[str]:
        return [plan.location.name for plan in without_idle(plans, settings)]

    assert kept(settings) == ["insights"]
    assert kept(make_settings(datahub_gms_url="http://127.0.0.1:9")) == ["insights", "lakehouse"]
    lite = settings.home.joinpath(*CATALOG_LITE)
    lite.parent.mkdir(parents=True)
    lite.touch()
    assert kept(settings) == ["insights", "lakehouse"]
    # Alone it is still run (and says why it did nothing), not an empty plan.
    bare = make_settings("without-catalog")
    alone = without_idle(plan_selection("datahub_metadata", bare), bare)
    assert [plan.location.name for plan in alone] == ["lakehouse"]


def test_a_name_defined_in_two_locations_is_an_error_that_says_so(
    make_settings: Callable[..., PhloSettings], tmp_path: Path
) -> None:
    twice = workspace(
        tmp_path,
        ("weather", "locations.weather.definitions"),
        ("weather_copy", "locations.weather.definitions"),
    )
    settings = make_settings(phlo_workspace=twice)
    with pytest.raises(SelectionError) as error:
        plan_selection("fct_daily_weather", settings)
    assert "'fct_daily_weather' is defined in two code locations (weather and weather_copy)" in str(
        error.value
    )


def test_a_location_is_enabled_by_the_workspace_file_alone(
    make_settings: Callable[..., PhloSettings], tmp_path: Path
) -> None:
    only_nightscout = workspace(tmp_path, ("nightscout", "locations.nightscout.definitions"))
    with pytest.raises(SelectionError, match="unknown asset 'dlt_weather_observations'"):
        plan_selection("dlt_weather_observations", make_settings(phlo_workspace=only_nightscout))
    [plan] = plan_selection("dlt_weather_observations", make_settings())  # the default file
    assert plan.location.name == "weather"


@pytest.mark.slow
def test_dagster_itself_loads_every_location_of_the_workspace_file(tmp_path: Path) -> None:
    """What `dagster dev -w infra/dagster/workspace.yaml` loads: one code server a location."""
    import os
    import subprocess
    import sys

    from phlo_core.workspace import DEFAULT_WORKSPACE

    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "definitions",
            "validate",
            "-w",
            str(DEFAULT_WORKSPACE),
        ],
        env={**os.environ, "PHLO_HOME": str(tmp_path / "phlo"), "DAGSTER_HOME": str(dagster_home)},
        cwd=DEFAULT_WORKSPACE.parents[2],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    for location in ("nightscout", "weather", "insights", "lakehouse"):
        assert f"Validation successful for code location {location}." in output


def test_a_workspace_file_names_locations_by_their_package_and_bad_yaml_is_one_line(
    tmp_path: Path, make_settings: Callable[..., PhloSettings]
) -> None:
    from phlo_core.workspace import WorkspaceError

    listed = tmp_path / "workspace.yaml"
    listed.write_text(
        "load_from:\n  - python_module: locations.weather.definitions\n  - python_module: orders\n"
    )
    refs = location_refs(make_settings(phlo_workspace=listed))
    assert [(ref.name, ref.module) for ref in refs] == [
        ("weather", "locations.weather.definitions"),
        ("orders", "orders"),
    ]
    broken = tmp_path / "broken.yaml"
    broken.write_text("load_from: [\n")
    with pytest.raises(WorkspaceError, match=r"broken.yaml is not valid YAML \(line 2\)"):
        location_refs(make_settings(phlo_workspace=broken))
