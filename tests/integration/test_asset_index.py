"""Selections name assets or the tables they write, and unknown names are refused from the
remembered index without loading Dagster; `phlo status` plans from the index as Dagster would
from the loaded graph; the SQLite event log phlo configures is Dagster's own format."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from dagster import AssetKey, AssetSelection, Definitions

from phlo_core.backfill.workers import worker_environment
from phlo_core.runs.asset_index import cached
from phlo_core.runs.selection import SelectionError, check_selection, plan_selection
from phlo_core.runs.status import daily_assets
from phlo_core.settings import PhloSettings
from phlo_core.workspace import DEFAULT_WORKSPACE, load_definitions, location_refs
from tests.integration.test_definitions import MODELS

# The ingestion, every dbt model built from it, and their publishing.
DOWNSTREAM = {"dlt_glucose_entries", "nightscout_published_marts"} | MODELS


def selected(settings: PhloSettings, selection: str) -> set[str]:
    return {
        key.to_user_string() for plan in plan_selection(selection, settings) for key in plan.keys
    }


@pytest.mark.parametrize("name", ["glucose_entries", "raw.glucose_entries"])
def test_a_table_name_means_the_asset_writing_it(
    name: str, make_settings: Callable[..., PhloSettings]
) -> None:
    settings = make_settings()
    assert selected(settings, f"{name}+") >= DOWNSTREAM
    assert selected(settings, name) == {"dlt_glucose_entries"}
    with pytest.raises(SelectionError, match="unknown asset 'glucose'"):
        plan_selection("glucose", settings)


def test_unknown_names_are_refused_from_the_index_without_loading_dagster(
    make_settings: Callable[..., PhloSettings],
) -> None:
    settings = make_settings()
    assert check_selection("nope", settings) == "nope"  # no index yet: unchecked
    plan_selection("dlt_glucose_entries", settings)  # loading the locations writes it
    assert cached(settings) is not None
    probe = (
        "import sys\n"
        "from phlo_core.runs.selection import SelectionError, check_selection\n"
        "from phlo_core.settings import get_settings\n"
        "settings = get_settings()\n"
        "print(check_selection('+glucose_entries+,mrt_glucose_overview', settings))\n"
        "try:\n"
        "    check_selection('nope', settings)\n"
        "except SelectionError as exc:\n"
        "    print(exc)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dagster', 'dbt', 'duckdb')))\n"
    )
    env = {**os.environ, **worker_environment(settings)}  # the same settings
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    resolved, refused, loaded = done.stdout.splitlines()
    assert resolved == "+dlt_glucose_entries+,mrt_glucose_overview"
    known = "known assets: datahub_metadata, dlt_glucose_entries, "
    assert refused.startswith(f"unknown asset 'nope'; {known}")
    assert loaded == "[]"


def test_the_index_is_forgotten_when_the_workspace_changes(
    tmp_path: Path, make_settings: Callable[..., PhloSettings]
) -> None:
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(DEFAULT_WORKSPACE.read_text())
    settings = make_settings(phlo_workspace=workspace)
    plan_selection("dlt_glucose_entries", settings)
    assert cached(settings) is not None
    workspace.write_text(DEFAULT_WORKSPACE.read_text() + "\n# edited\n")
    assert cached(settings) is None
    assert cached(make_settings(phlo_workspace=DEFAULT_WORKSPACE)) is None  # other settings


def test_the_event_log_is_dagsters_sqlite_format(
    make_settings: Callable[..., PhloSettings],
) -> None:
    """Runs written through phlo's pooled storage read back with Dagster's stock storage (what
    older homes were written with), events and asset index alike."""
    from dagster import asset, materialize
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    from phlo_core.runs.instance import instance_for

    @asset
    def numbers() -> int:
        return 1

    settings = make_settings()
    instance = instance_for(settings)
    ours = materialize([numbers], instance=instance).run_id
    stock = SqliteEventLogStorage(str(settings.resolved_dagster_home / "history" / "runs"))
    assert any(
        record.event_log_entry.dagster_event_type == "ASSET_MATERIALIZATION"
        for record in stock.get_records_for_run(ours).records
    )
    assert stock.get_latest_materialization_events([numbers.key])[numbers.key] is not None
    instance.event_log_storage.dispose()  # closes the engines it kept open
    assert instance.get_latest_materialization_event(numbers.key) is not None


def _shape(path: Path) -> tuple[object, ...]:
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(path)) as db:
        return (
            sorted(db.execute("select type, name, sql from sqlite_master").fetchall()),
            db.execute("select version_num from alembic_version").fetchall(),
            db.execute("pragma journal_mode").fetchall(),
        )


def test_a_new_runs_database_is_a_copy_of_dagsters_empty_one(tmp_path: Path) -> None:
    """A new run's database is copied from a template Dagster's own code made: the same
    tables, schema revision and journal as Dagster's stock storage creates; the template is not
    taken for a run; a database that already exists is kept as it is."""
    import sqlite3
    import uuid
    from contextlib import closing

    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    from phlo_core.runs.event_storage import PooledSqliteEventLogStorage

    ours, stock = (
        PooledSqliteEventLogStorage(str(tmp_path / "ours")),
        SqliteEventLogStorage(str(tmp_path / "stock")),
    )
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    for storage in (ours, stock):
        with storage.run_connection(first):
            pass
    with ours.run_connection(second):
        pass
    [template] = (tmp_path / "ours").glob(".phlo-run-template-*.sqlite")
    assert _shape(tmp_path / "ours" / f"{first}.db") == _shape(tmp_path / "stock" / f"{first}.db")
    assert sorted(ours.get_all_run_ids()) == sorted([first, second])
    # A run database made elsewhere (another process, an older phlo) is not replaced.
    kept = str(uuid.uuid4())
    with SqliteEventLogStorage(str(tmp_path / "ours")).run_connection(kept):
        pass
    with closing(sqlite3.connect(tmp_path / "ours" / f"{kept}.db")) as db:
        db.execute("create table marker (x integer)")
    with ours.run_connection(kept) as conn:
        assert conn.exec_driver_sql("select count(*) from marker").scalar() == 0
    ours.dispose()
    assert template.exists()


def test_the_event_log_commits_without_waiting_for_the_disk_only_in_wal_mode(
    tmp_path: Path,
) -> None:
    """The run's and the index's databases (WAL, as Dagster makes them) commit with
    synchronous=NORMAL; a database in another journal mode keeps SQLite's FULL."""
    import sqlite3
    import uuid
    from contextlib import closing

    from phlo_core.runs.event_storage import PooledSqliteEventLogStorage

    storage = PooledSqliteEventLogStorage(str(tmp_path))
    run_id, old_run = str(uuid.uuid4()), str(uuid.uuid4())
    with closing(sqlite3.connect(tmp_path / f"{old_run}.db")) as db:
        db.execute("pragma journal_mode=delete")
    try:
        for connection in (storage.run_connection(run_id), storage.index_connection()):
            with connection as conn:
                assert conn.exec_driver_sql("pragma journal_mode").scalar() == "wal"
                assert conn.exec_driver_sql("pragma synchronous").scalar() == 1  # NORMAL
        with storage.run_connection(old_run) as conn:
            assert conn.exec_driver_sql("pragma journal_mode").scalar() == "delete"
            assert conn.exec_driver_sql("pragma synchronous").scalar() == 2  # FULL
    finally:
        storage.dispose()


def test_a_range_run_stores_its_asset_events_in_batches_as_dagster_would_one_by_one(
    make_settings: Callable[..., PhloSettings],
) -> None:
    """A run over five days records a materialization per day; phlo's storage writes them as
    one batch per step (and the run's planned materializations and checks as another), and the
    index reads back as Dagster's stock storage writes it."""
    from dagster import (
        AssetCheckKey,
        AssetCheckResult,
        AssetCheckSpec,
        BackfillPolicy,
        DagsterEventType,
        DagsterInstance,
        DailyPartitionsDefinition,
        MaterializeResult,
        asset,
        materialize,
    )
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    from phlo_core.runs.event_storage import PooledSqliteEventLogStorage
    from phlo_core.runs.instance import instance_for

    days = DailyPartitionsDefinition(start_date="2024-01-01")

    @asset(
        partitions_def=days,
        backfill_policy=BackfillPolicy.single_run(),
        check_specs=[AssetCheckSpec("counted", asset="readings")],
    )
    def readings(context):  # noqa: ANN001, ANN201 (Dagster reads the name and the return)
        context.log.info(f"{len(context.partition_keys)} days")
        return MaterializeResult(
            check_results=[AssetCheckResult(passed=len(context.partition_keys) == 5)]
        )

    keys = [f"2024-01-0{day}" for day in range(2, 7)]
    check = AssetCheckKey(readings.key, "counted")
    batches: list[int] = []
    planned_checks: list[int] = []  # planned check events per batch
    one_by_one: list[object] = []  # what was stored one event at a time
    original = PooledSqliteEventLogStorage.store_event_batch
    original_one = PooledSqliteEventLogStorage.store_event

    def counted(storage: PooledSqliteEventLogStorage, events: list) -> None:  # type: ignore[type-arg]
        batches.append(len(events))
        kinds = [event.dagster_event_type for event in events]
        planned_checks.append(kinds.count(DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED))
        original(storage, events)

    def single(storage: PooledSqliteEventLogStorage, event) -> None:  # noqa: ANN001
        one_by_one.append(event.dagster_event_type)
        original_one(storage, event)

    def run(instance: DagsterInstance) -> dict[str, object]:
        materialize(
            [readings],
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": keys[0],
                "dagster/asset_partition_range_end": keys[-1],
            },
        )
        storage = instance.event_log_storage
        records = instance.fetch_materializations(readings.key, limit=100).records
        return {
            "partitions": storage.get_materialized_partitions(readings.key),
            "materializations": sorted(r.partition_key or "" for r in records),
            "by_partition": sorted(
                storage.get_latest_storage_id_by_partition(
                    readings.key, DagsterEventType.ASSET_MATERIALIZATION
                )
            ),
            "latest": storage.get_latest_materialization_events([readings.key])[
                readings.key
            ].dagster_event.partition,  # type: ignore[union-attr]
            "checks": [
                (record.status, record.event.dagster_event_type if record.event else None)
                for record in storage.get_asset_check_execution_history(check, limit=10)
            ],
        }

    settings = make_settings()
    PooledSqliteEventLogStorage.store_event_batch = counted  # type: ignore[method-assign]
    PooledSqliteEventLogStorage.store_event = single  # type: ignore[method-assign]
    try:
        ours = run(instance_for(settings))
    finally:
        PooledSqliteEventLogStorage.store_event_batch = original  # type: ignore[method-assign]
        PooledSqliteEventLogStorage.store_event = original_one  # type: ignore[method-assign]
    # Stored at once: the five days planned with the planned check, then the five days.
    assert batches == [len(keys) + 1, len(keys)]
    assert planned_checks == [1, 0]
    assert DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED not in one_by_one  # in the batch
    assert DagsterEventType.ASSET_MATERIALIZATION not in one_by_one

    (settings.phlo_home / "stock").mkdir()
    with DagsterInstance.local_temp(str(settings.phlo_home / "stock")) as stock:
        assert isinstance(stock.event_log_storage, SqliteEventLogStorage)
        assert not isinstance(stock.event_log_storage, PooledSqliteEventLogStorage)
        assert ours == run(stock)
    assert ours["partitions"] == set(keys)
    assert ours["materializations"] == keys
    statuses = [status.value for status, _ in ours["checks"]]  # type: ignore[attr-defined]
    # As Dagster stores it (the same as its stock storage, above): planned per day, and passed.
    assert sorted(statuses) == ["PLANNED"] * len(keys) + ["SUCCEEDED"]


@pytest.mark.parametrize(
    "selection",
    [
        None,
        "dlt_glucose_entries+",
        "+mrt_glucose_weather_daily",
        "fct_daily_weather",
        "dlt_weather_observations+,+stg_glucose_entries",
    ],
)
def test_status_plans_from_the_index_as_dagster_resolves_the_loaded_graph(
    selection: str | None, make_settings: Callable[..., PhloSettings]
) -> None:
    """`phlo status` lists daily assets from the remembered graphs; the same selection resolved
    by Dagster over every location's definitions merged must give the same assets, parents
    before children."""
    settings = make_settings()
    loaded = {ref.name: load_definitions(ref, settings) for ref in location_refs(settings)}
    graphs = {name: defs.resolve_asset_graph() for name, defs in loaded.items()}
    owner = {k: name for name, g in graphs.items() for k in g.materializable_asset_keys}
    merged = Definitions.merge(*loaded.values()).resolve_asset_graph()
    if selection is None:
        keys = set(owner)
    else:
        keys = set()
        for token in selection.split(","):
            key = AssetKey(token.strip("+"))
            if token.endswith("+"):
                keys |= AssetSelection.assets(key).downstream().resolve(merged)
            elif token.startswith("+"):  # upstream within the asset's own location
                keys |= AssetSelection.assets(key).upstream().resolve(graphs[owner[key]])
            else:
                keys.add(key)
    expected = {
        (owner[k], k.to_user_string())
        for k in keys
        if k in owner and merged.get(k).partitions_def is not None
    }
    plan_selection("dlt_glucose_entries", settings)  # remembers the index
    listed = daily_assets(settings, selection)
    assert set(listed) == expected
    assert len(listed) == len(expected)
    position = {name: i for i, (_, name) in enumerate(listed)}
    for _, name in listed:
        for parent in merged.get(AssetKey(name)).parent_keys:
            assert position.get(parent.to_user_string(), -1) < position[name], (parent, name)


def test_status_reads_the_index_without_loading_dagster(
    make_settings: Callable[..., PhloSettings],
) -> None:
    settings = make_settings()
    plan_selection("dlt_glucose_entries", settings)
    probe = (
        "import sys\n"
        "from phlo_core.settings import get_settings\n"
        "from phlo_core.runs.status import daily_assets\n"
        "print(daily_assets(get_settings(), 'dlt_glucose_entries+'))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dagster', 'dbt', 'duckdb')))\n"
    )
    env = {**os.environ, **worker_environment(settings)}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    listed, loaded = done.stdout.splitlines()
    assert listed == str(daily_assets(settings, "dlt_glucose_entries+"))
    assert "('nightscout', 'fct_glucose_readings')" in listed
    assert loaded == "[]"
