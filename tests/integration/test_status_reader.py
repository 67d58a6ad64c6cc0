"""`phlo status` reads Dagster's asset index with plain SQL (no instance opened: no lock, no
writes, no Dagster import cost). It must answer exactly what Dagster's own storage classes
answer, on SQLite and on PostgreSQL: latest materialization per partition (after a wipe),
attempts without a materialization, the first materialization after a moment, run statuses."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from dagster import AssetKey, DailyPartitionsDefinition, asset, materialize

from phlo_core.runlogs.stores import InstanceStorage, PostgresTables, SqliteFiles, open_logs
from phlo_core.runs.instance import instance_for
from phlo_core.settings import PhloSettings, load_settings

DAILY = DailyPartitionsDefinition(start_date="2024-01-01")
FAILING: set[str] = set()


@asset(partitions_def=DAILY)
def readings(context) -> None:  # noqa: ANN001
    if context.partition_key in FAILING:
        raise RuntimeError("the source failed for this day")


@asset(partitions_def=DAILY)
def wiped(context) -> None:  # noqa: ANN001, ARG001
    return None


def run(settings: PhloSettings, day: str, *assets: object) -> None:
    materialize(
        list(assets),  # pyright: ignore[reportArgumentType]
        partition_key=day,
        instance=instance_for(settings),
        raise_on_error=False,
    )


@pytest.fixture(params=["embedded", "production"])
def settings(
    request: pytest.FixtureRequest, tmp_path: Path, make_settings: Callable[..., PhloSettings]
) -> PhloSettings:
    if request.param == "embedded":
        return make_settings()
    profile = request.getfixturevalue("production_profile")()
    return load_settings(
        phlo_home=tmp_path / "home", **{key.lower(): value for key, value in profile.items()}
    )


def test_plain_sql_answers_as_dagsters_storage(settings: PhloSettings) -> None:
    FAILING.clear()
    for day in ("2024-01-01", "2024-01-02", "2024-01-03"):
        run(settings, day, readings, wiped)
    FAILING.add("2024-01-02")  # done before, failed now: Dagster shows it failed
    run(settings, "2024-01-02", readings)
    FAILING.add("2024-01-04")  # never done
    run(settings, "2024-01-04", readings)
    instance = instance_for(settings)
    instance.wipe_assets([AssetKey("wiped")])
    time.sleep(0.01)
    middle = dt.datetime.now(dt.UTC)
    time.sleep(0.01)
    run(settings, "2024-01-03", readings, wiped)
    FAILING.clear()

    sql = open_logs(settings)
    assert isinstance(sql, SqliteFiles | PostgresTables)
    dagster = InstanceStorage(instance)
    for name in ("readings", "wiped", "never_materialized"):
        latest = sql.latest_materializations([name])
        assert latest == dagster.latest_materializations([name]), name
        attempts = sql.unmaterialized_attempts([name])
        assert attempts == dagster.unmaterialized_attempts([name]), name
        first = sql.first_materialization_after([name], middle)
        assert first == dagster.first_materialization_after([name], middle), name
        runs = sorted(attempts.values())
        assert sql.run_statuses(runs) == dagster.run_statuses(runs), name
    # What the instance holds, for the record: the checks above compare something.
    assert set(sql.latest_materializations(["readings"])) == {
        "2024-01-01",
        "2024-01-02",
        "2024-01-03",
    }
    assert set(sql.latest_materializations(["wiped"])) == {"2024-01-03"}
    assert set(sql.unmaterialized_attempts(["readings"])) == {"2024-01-02", "2024-01-04"}
    assert set(
        sql.run_statuses(sorted(sql.unmaterialized_attempts(["readings"]).values())).values()
    ) == {"FAILURE"}
    assert sql.first_materialization_after(["readings"], middle) is not None
    assert sql.first_materialization_after(["readings"], dt.datetime.now(dt.UTC)) is None
