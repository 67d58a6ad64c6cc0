"""A backfill as a record in the Dagster instance (its key-value store, beside the runs), and
what the instance says of its days: materialized, failed, runs left unfinished."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from phlo_core.calendar import DayRange
from phlo_core.settings import PhloSettings

if TYPE_CHECKING:
    from dagster import AssetKey, DagsterInstance

    from phlo_core.runs.selection import LocationPlan


BACKFILL_TAG = "dagster/backfill"


_KEY = "phlo/backfill/"


class BackfillError(ValueError):
    """Bad backfill input (dates, options, nothing to resume): a usage error."""


@dataclass
class Backfill:
    id: str
    selection: str
    days: list[str]
    chunk_size: int
    parallel: int
    created: float
    cursor: int  # the event log's last storage id when the backfill began
    allow_shrink: bool = False
    finished: bool = False  # every day done when it last ran (the instance has the truth)
    # Handed to Dagster's daemon (`--submit`): the ids of the asset backfills it runs as (the
    # first is this backfill's own id; each --resume adds one).
    submitted: list[str] = field(default_factory=list)

    @property
    def dates(self) -> list[dt.date]:
        return [dt.date.fromisoformat(day) for day in self.days]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Backfill:
        return cls(**json.loads(text))


def new_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def save(instance: DagsterInstance, backfill: Backfill) -> None:
    """Write the record: one key per backfill, so that backfills started at once cannot lose
    each other's (an index read, extended and written back could)."""
    instance.run_storage.set_cursor_values({_KEY + backfill.id: backfill.to_json()})


def load(instance: DagsterInstance, backfill_id: str | None = None) -> Backfill | None:
    """One backfill by id (or unique prefix), or the latest one when no id is given."""
    ids = all_ids(instance)
    if backfill_id is not None:
        matching = [known for known in ids if known.startswith(backfill_id)]
        if len(matching) > 1:
            raise BackfillError(f"{backfill_id!r} matches {len(matching)} backfills: {matching}")
        if not matching:
            raise BackfillError(
                f"no backfill {backfill_id!r} in this instance (`phlo backfill list` lists them)"
            )
        ids = matching
    if not ids:
        return None
    if len(ids) > 1:  # the latest: by the time it was created (ids of one second tie)
        return all_backfills(instance)[-1]
    text = instance.run_storage.get_cursor_values({_KEY + ids[0]}).get(_KEY + ids[0])
    return Backfill.from_json(text) if text else None


def all_ids(instance: DagsterInstance) -> list[str]:
    """Every backfill's id, oldest first (an id begins with its time): the keys of the records
    in the run storage's key-value table."""
    from dagster._core.storage.runs.schema import KeyValueStoreTable
    from dagster._core.storage.runs.sql_run_storage import SqlRunStorage
    from dagster._core.storage.sqlalchemy_compat import db_select

    storage = instance.run_storage
    if not isinstance(storage, SqlRunStorage):
        raise BackfillError(f"backfills need Dagster's SQL run storage, not {type(storage)}")
    column = KeyValueStoreTable.c.key
    with storage.connect() as conn:
        keys = conn.execute(db_select([column]).where(column.like(_KEY + "%"))).fetchall()
    return sorted(key[0][len(_KEY) :] for key in keys)


def all_backfills(instance: DagsterInstance) -> list[Backfill]:
    ids = all_ids(instance)
    values = instance.run_storage.get_cursor_values({_KEY + i for i in ids})
    found = [Backfill.from_json(values[_KEY + i]) for i in ids if _KEY + i in values]
    return sorted(found, key=lambda backfill: (backfill.created, backfill.id))  # oldest first


def recorded(settings: PhloSettings) -> list[Backfill] | None:
    """The backfill records, read straight from the instance's key-value table without loading
    Dagster (a fraction of a second instead of two): SQLite opened read-only, or PostgreSQL.
    An instance not created yet has none. None when this cannot tell (a dagster.yaml of the
    user's, a database that does not answer): ask Dagster (`all_backfills`)."""
    config_file = settings.resolved_dagster_home / "dagster.yaml"
    if not config_file.exists():
        return []
    from phlo_core.runs.instance import instance_config

    if config_file.read_text() != instance_config(settings):
        return None  # the user's own instance settings, or not brought up to date yet
    if settings.dagster_postgres_url is not None:
        import psycopg2

        from phlo_core.runs.instance import InstanceError, connect_dagster_postgres

        try:
            connection = connect_dagster_postgres(settings)
        except InstanceError:
            return None  # Dagster's own path reports it
        try:
            with connection.cursor() as cursor:
                cursor.execute("select to_regclass('kvs') is not null")
                row = cursor.fetchone()
                if not row or not row[0]:
                    return []
                cursor.execute("select key, value from kvs where key like %s", (_KEY + "%",))
                values = dict(cursor.fetchall())
        except psycopg2.Error:
            return None
        finally:
            connection.close()
    else:
        import sqlite3

        path = settings.resolved_dagster_home / "history" / "runs.db"
        if not path.exists():
            return []
        connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            values = dict(
                connection.execute("select key, value from kvs where key like ?", (_KEY + "%",))
            )
        except sqlite3.OperationalError as exc:
            return [] if "no such table" in str(exc) else None
        finally:
            connection.close()
    found = [Backfill.from_json(value) for value in values.values()]
    return sorted(found, key=lambda backfill: (backfill.created, backfill.id))  # oldest first


def last_storage_id(instance: DagsterInstance) -> int:
    return instance.event_log_storage.get_maximum_record_id() or 0


def daily_keys(plans: Sequence[LocationPlan]) -> list[AssetKey]:
    keys = []
    for plan in plans:
        graph = plan.definitions.resolve_asset_graph()
        keys += [key for key in plan.keys if graph.get(key).partitions_def is not None]
    return keys


def materialized_days(
    instance: DagsterInstance,
    keys: Sequence[AssetKey],
    after_cursor: int | None,
    lake_created: dt.datetime | None,
) -> set[dt.date]:
    """Days every one of `keys` has a successful materialization of (after the cursor) in this
    lakehouse (created at `lake_created`)."""
    from phlo_core.runlogs.stores import InstanceStorage
    from phlo_core.runs.status import materialized_partitions

    source = InstanceStorage(instance)
    common: set[str] | None = None
    for key in keys:
        found = materialized_partitions(source, key.path, lake_created, after_cursor)
        common = found if common is None else common & found
    return {dt.date.fromisoformat(day) for day in common or set()}


def failed_days(instance: DagsterInstance, backfill_id: str) -> set[dt.date]:
    """Days of this backfill's runs (its own, or those of the asset backfills it was handed to
    Dagster as) that failed."""
    from dagster import DagsterRunStatus, RunsFilter

    record = load(instance, backfill_id)
    ids = [backfill_id, *(record.submitted if record else [])]
    runs = [
        run
        for one in dict.fromkeys(ids)
        for run in instance.get_run_records(
            RunsFilter(tags={BACKFILL_TAG: one}, statuses=[DagsterRunStatus.FAILURE])
        )
    ]
    days: set[dt.date] = set()
    for record in runs:
        tags = record.dagster_run.tags
        start = tags.get("dagster/asset_partition_range_start") or tags.get("dagster/partition")
        end = tags.get("dagster/asset_partition_range_end") or start
        if start and end:
            first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
            days |= set(DayRange(first, last + dt.timedelta(days=1)).days())
    return days


def cancel_unfinished(instance: DagsterInstance, backfill_id: str) -> int:
    """After Ctrl-C, once the workers have exited: mark CANCELED the backfill's runs left going
    by this process or by a process that is gone (never those of another live process, say a
    second `--resume` of the same backfill). How many were marked."""

    from dagster import RunsFilter
    from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES

    from phlo_core.runs.orphans import PID_TAG, process_gone
    from phlo_core.runs.progress import CANCEL_MESSAGE

    records = instance.get_run_records(
        RunsFilter(tags={BACKFILL_TAG: backfill_id}, statuses=NOT_FINISHED_STATUSES)
    )
    marked = 0
    for record in records:
        run = record.dagster_run
        if run.tags.get(PID_TAG) == str(os.getpid()) or process_gone(run.tags):
            instance.report_run_canceled(run, message=CANCEL_MESSAGE)
            marked += 1
    return marked


def create(
    settings: PhloSettings,
    selection: str,
    days: list[dt.date],
    *,
    chunk_size: int,
    parallel: int,
    allow_shrink: bool,
) -> Backfill:
    """A new backfill recorded in the instance (its id goes on every run it makes)."""
    from phlo_core.runs.instance import instance_for

    instance = instance_for(settings)
    backfill = Backfill(
        new_id(),
        selection,
        [day.isoformat() for day in days],
        chunk_size,
        parallel,
        time.time(),
        last_storage_id(instance),
        allow_shrink,
    )
    save(instance, backfill)
    return backfill
