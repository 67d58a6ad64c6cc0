"""Where a Dagster instance keeps its run logs, opened to read (never created): Dagster's default
SQLite files read-only, its PostgreSQL storage over one connection, any other instance through
Dagster's own storage classes."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
import warnings
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phlo_core.runlogs.model import (
    BACKFILL_TAG,
    InstanceNotCreatedError,
    LogFilter,
    LogsError,
    NoInstanceError,
    RunInfo,
)
from phlo_core.runlogs.sql import select_events, utc_text, where_clause

if TYPE_CHECKING:
    from dagster import DagsterInstance

    from phlo_core.settings import PhloSettings

_HEX = re.compile(r"[0-9a-f-]{1,36}")


_GOING = ("STARTING", "STARTED", "CANCELING")


def _clean_prefix(prefix: str) -> str:
    cleaned = prefix.strip().lower()
    if not _HEX.fullmatch(cleaned):
        raise LogsError(f"--run-id {prefix!r} is not a run id (hexadecimal, e.g. 3f2a9c1b)")
    return cleaned


def _one_match(cleaned: str, matches: Sequence[str]) -> str:
    if not matches:
        raise LogsError(f"no run id starts with {cleaned!r} in this Dagster instance")
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (" ..." if len(matches) > 5 else "")
        raise LogsError(f"--run-id {cleaned!r} matches several runs: {shown}")
    return matches[0]


class _Tables:
    """Dagster's run and event tables read with plain SQL, without importing Dagster (that
    import alone costs a command about 2 s here). Where each table lives is the subclass's."""

    dialect = "sqlite"

    def _fetch(self, where: str, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Rows of `sql` (named :params) in the runs storage ("runs"), the asset index
        ("index") or one run's events (its run id)."""
        raise NotImplementedError

    def resolve(self, prefix: str) -> str:
        cleaned = _clean_prefix(prefix)
        rows = self._fetch(
            "runs",
            "select run_id from runs where run_id like :prefix order by id desc limit 6",
            {"prefix": f"{cleaned}%"},
        )
        return _one_match(cleaned, [row[0] for row in rows])

    def has_asset(self, name: str) -> bool:
        sql = "select 1 from event_logs where asset_key = :key limit 1"
        return bool(self._fetch("index", sql, {"key": json.dumps([name])}))

    def runs(self, logs: LogFilter) -> list[RunInfo]:
        clauses, params = ["1 = 1"], dict[str, Any]()
        wanted = list(logs.run_ids) if logs.run_ids is not None else None
        if logs.asset is not None:
            touched = self._fetch(
                "index",
                "select distinct run_id from event_logs where asset_key = :key "
                "and dagster_event_type = 'ASSET_MATERIALIZATION_PLANNED'",
                {"key": json.dumps([logs.asset])},
            )
            planned = {row[0] for row in touched}
            wanted = sorted(planned if wanted is None else planned & set(wanted))
            if not wanted:
                return []
        if wanted is not None:
            names = [f"r{i}" for i in range(len(wanted))]
            clauses.append(f"run_id in ({', '.join(':' + n for n in names)})")
            params |= dict(zip(names, wanted, strict=True))
        if logs.job is not None:
            clauses.append("pipeline_name = :job")
            params["job"] = logs.job
        if logs.backfill is not None:
            clauses.append(
                "run_id in (select run_id from run_tags where key = :tag and value = :backfill)"
            )
            params |= {"tag": BACKFILL_TAG, "backfill": logs.backfill}
        if logs.since is not None:
            recent = "update_timestamp >= :since"
            if logs.with_unfinished:
                recent = f"({recent} or status in ({', '.join(repr(s) for s in _GOING)}))"
            clauses.append(recent)
            params["since"] = utc_text(logs.since)
        sql = (
            "select run_id, pipeline_name, update_timestamp from runs "
            f"where {' and '.join(clauses)} order by update_timestamp desc"
        )
        return [
            RunInfo(run_id, job, _epoch(updated))
            for run_id, job, updated in self._fetch("runs", sql, params)
        ]

    def rows(self, run_id: str, logs: LogFilter, after: int | None) -> list[tuple[Any, ...]]:
        sql, params = select_events(logs, after, logs.limit, self.dialect)
        return self._fetch(run_id, sql, {**params, "run_id": run_id})

    def rows_of(
        self, run_ids: Sequence[str], logs: LogFilter, after: Mapping[str, int]
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """`rows` of each run, with its run id."""
        return [(r, row) for r in run_ids for row in self.rows(r, logs, after.get(r))]

    # --- the asset index, for `phlo status` (what Dagster's storage answers for a partitioned
    # asset, in the same SQL: latest events by partition, after the asset's last wipe) ---

    def _wiped_after(self, key: str) -> str:
        """Events at or before the asset's last wipe do not count (Dagster's wipe filter)."""
        rows = self._fetch(
            "index", "select asset_details from asset_keys where asset_key = :key", {"key": key}
        )
        details = json.loads(rows[0][0]) if rows and rows[0][0] else {}
        wiped = details.get("last_wipe_timestamp") or 0.0
        return utc_text(dt.datetime.fromtimestamp(wiped, dt.UTC))

    def _latest_by_partition(self, key: str, event_type: str) -> list[tuple[Any, ...]]:
        """(partition, storage id, run id) of the latest `event_type` event of each partition."""
        sql = (
            "select e.partition, e.id, e.run_id from event_logs e join ("
            "select max(id) as id from event_logs where asset_key = :key "
            "and dagster_event_type = :kind and partition is not null and timestamp > :wiped "
            "group by partition) latest on e.id = latest.id"
        )
        params = {"key": key, "kind": event_type, "wiped": self._wiped_after(key)}
        return self._fetch("index", sql, params)

    def latest_materializations(self, asset: Sequence[str]) -> dict[str, int]:
        """Partition -> storage id of its latest materialization."""
        rows = self._latest_by_partition(json.dumps(list(asset)), "ASSET_MATERIALIZATION")
        return {partition: storage_id for partition, storage_id, _ in rows}

    def unmaterialized_attempts(self, asset: Sequence[str]) -> dict[str, str]:
        """Partition -> run id, where the latest planned materialization has none after it (a run
        still going, or one that failed)."""
        key = json.dumps(list(asset))
        done = self.latest_materializations(asset)
        return {
            partition: run_id
            for partition, planned, run_id in self._latest_by_partition(
                key, "ASSET_MATERIALIZATION_PLANNED"
            )
            if planned > done.get(partition, -1)
        }

    def first_materialization_after(self, asset: Sequence[str], moment: dt.datetime) -> int | None:
        """The storage id of the asset's first materialization after `moment`, if any."""
        rows = self._fetch(
            "index",
            "select min(id) from event_logs where asset_key = :key "
            "and dagster_event_type = 'ASSET_MATERIALIZATION' and timestamp > :after",
            {"key": json.dumps(list(asset)), "after": utc_text(moment)},
        )
        return rows[0][0] if rows and rows[0][0] is not None else None

    def run_statuses(self, run_ids: Sequence[str]) -> dict[str, str]:
        """Run id -> its status (Dagster's DagsterRunStatus name); runs deleted are absent."""
        if not run_ids:
            return {}
        names = [f"r{i}" for i in range(len(run_ids))]
        listed = ", ".join(":" + name for name in names)
        sql = f"select run_id, status from runs where run_id in ({listed})"
        return dict(self._fetch("runs", sql, dict(zip(names, run_ids, strict=True))))

    def active_runs(self) -> dict[str, int]:
        """How many runs are queued, starting or started (Dagster's status names)."""
        sql = (
            "select status, count(*) from runs "
            "where status in ('QUEUED', 'NOT_STARTED', 'STARTING', 'STARTED') group by status"
        )
        return {str(status): int(count) for status, count in self._fetch("runs", sql, {})}


def _epoch(stamp: str | dt.datetime | None) -> float:
    """A timestamp as Dagster stores it (UTC without zone: text in SQLite) as epoch seconds."""
    if stamp is None or stamp == "":
        return 0.0
    moment = dt.datetime.fromisoformat(stamp) if isinstance(stamp, str) else stamp
    return moment.replace(tzinfo=dt.UTC).timestamp()


def read_only_uri(path: Path) -> str:
    """A SQLite URI that opens `path` to read. Dagster's files are in WAL mode, which even a
    reader opens with its shared-memory file beside the database: on a read-only file system
    (a mounted backup: nobody writes there either) that fails, so the file is opened as
    immutable there, and only there (SQLite would ignore a live writer's WAL)."""
    uri = f"{path.absolute().as_uri()}?mode=ro"
    read_only = os.statvfs(path.parent).f_flag & os.ST_RDONLY
    return uri + "&immutable=1" if read_only else uri


class SqliteFiles(_Tables):
    """An instance in Dagster's default SQLite layout, read from its files with sqlite3:
    runs.db, history/runs/index.db (the asset index) and one file per run's events."""

    def __init__(self, home: Path) -> None:
        self.history = home / "history"

    def _connect(self, path: Path) -> sqlite3.Connection:
        con = sqlite3.connect(read_only_uri(path), uri=True, timeout=30)
        # Pages read through a memory map, not one read() call each: a filter on the level
        # reads every log line of the runs it looks at (about 1 KB each).
        con.execute("pragma mmap_size = 268435456")
        return con

    def _fetch(self, where: str, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        path = {"runs": self.history / "runs.db", "index": self.history / "runs" / "index.db"}
        path = path.get(where, self.history / "runs" / f"{where}.db")
        if where != "runs" and not path.exists():
            return []  # no asset event yet; a run with no event yet
        with closing(self._connect(path)) as con:
            try:
                return con.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if where != "runs" and "no such table" in str(exc):
                    return []  # a run just starting: Dagster has not created its table yet
                raise


_PARAM = re.compile(r"(?<!:):([a-z_]\w*)")


class PostgresTables(_Tables):
    """Dagster's storage in PostgreSQL (dagster-postgres: runs, run_tags and one event_logs
    table for every run, the asset index included), read over one psycopg2 connection."""

    dialect = "postgresql"

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def _fetch(self, where: str, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        with self.connection.cursor() as cursor:
            cursor.execute(_PARAM.sub(r"%(\1)s", sql), dict(params))
            return cursor.fetchall()

    def rows_of(
        self, run_ids: Sequence[str], logs: LogFilter, after: Mapping[str, int]
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """One statement for many runs (a round trip per run cost more than the reading): each
        run's newest matches, as `rows` selects them, through a lateral join."""
        where, params = where_clause(logs, "r.after_id", self.dialect, run="r.run_id")
        sql = (
            "select r.run_id, e.id, e.event, e.dagster_event_type "
            "from unnest(cast(:run_ids as text[]), cast(:afters as bigint[]))"
            " as r(run_id, after_id)"
            " cross join lateral (select id, event, dagster_event_type from event_logs"
            f" where run_id = r.run_id and {where} order by id desc limit {int(logs.limit)}) as e"
        )
        params |= {"run_ids": list(run_ids), "afters": [after.get(r, 0) for r in run_ids]}
        return [(row[0], tuple(row[1:])) for row in self._fetch("", sql, params)]


class InstanceStorage:
    """Any Dagster instance, read through its own storage classes."""

    def __init__(self, instance: DagsterInstance) -> None:
        self.instance = instance

    def resolve(self, prefix: str) -> str:
        import sqlalchemy as sa
        from dagster._core.storage.runs.schema import RunsTable

        cleaned = _clean_prefix(prefix)
        connect = getattr(self.instance.run_storage, "connect", None)
        if connect is None:  # not a SQL run storage: ask it run by run
            matches = [
                r.dagster_run.run_id
                for r in self.instance.get_run_records(limit=None)
                if r.dagster_run.run_id.startswith(cleaned)
            ]
        else:  # an indexed LIKE in the run storage, not every run loaded
            query = (
                sa.select(RunsTable.c.run_id)
                .where(RunsTable.c.run_id.like(f"{cleaned}%"))
                .order_by(RunsTable.c.id.desc())
                .limit(6)
            )
            with connect() as con:
                matches = [row[0] for row in con.execute(query)]
        return _one_match(cleaned, matches)

    def has_asset(self, name: str) -> bool:
        from dagster import AssetKey

        return self.instance.has_asset_key(AssetKey.from_user_string(name))

    def runs(self, logs: LogFilter) -> list[RunInfo]:
        from dagster import AssetKey, DagsterRunStatus, RunsFilter

        run_ids = list(logs.run_ids) if logs.run_ids is not None else None
        if logs.asset is not None:
            # Runs that planned the asset, from the event log's asset index.
            with warnings.catch_warnings():  # deprecated for Dagster 2.0, no replacement yet
                warnings.simplefilter("ignore", DeprecationWarning)
                planned = self.instance.fetch_planned_materializations(
                    AssetKey.from_user_string(logs.asset), limit=100_000
                )
            touched = {record.run_id for record in planned.records}
            run_ids = sorted(touched if run_ids is None else touched & set(run_ids))
            if not run_ids:
                return []
        tags = {BACKFILL_TAG: logs.backfill} if logs.backfill else None
        filters = RunsFilter(
            run_ids=run_ids, job_name=logs.job, updated_after=logs.since, tags=tags
        )
        records = {
            r.dagster_run.run_id: r for r in self.instance.get_run_records(filters, limit=None)
        }
        if logs.with_unfinished and logs.since is not None:
            # A run that is still going may log long after its last status change.
            going = RunsFilter(
                run_ids=run_ids,
                job_name=logs.job,
                statuses=[DagsterRunStatus[name] for name in _GOING],
                tags=tags,
            )
            records |= {
                r.dagster_run.run_id: r for r in self.instance.get_run_records(going, limit=None)
            }
        return sorted(
            (
                RunInfo(run_id, r.dagster_run.job_name, r.update_timestamp.timestamp())
                for run_id, r in records.items()
            ),
            key=lambda run: run.updated,
            reverse=True,
        )

    def rows(self, run_id: str, logs: LogFilter, after: int | None) -> list[tuple[Any, ...]]:
        from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
            SqliteEventLogStorage,
        )

        storage = self.instance.event_log_storage
        if isinstance(storage, SqliteEventLogStorage):
            path = Path(storage.path_for_shard(run_id))
            if not path.exists():
                return []
            sql, params = select_events(logs, after, logs.limit, "sqlite")
            with closing(sqlite3.connect(read_only_uri(path), uri=True, timeout=30)) as con:
                return con.execute(sql, {**params, "run_id": run_id}).fetchall()
        import sqlalchemy as sa

        with storage.run_connection(run_id) as con:  # pyright: ignore[reportAttributeAccessIssue]
            sql, params = select_events(logs, after, logs.limit, con.dialect.name)
            return [tuple(row) for row in con.execute(sa.text(sql), {**params, "run_id": run_id})]

    rows_of = _Tables.rows_of

    def latest_materializations(self, asset: Sequence[str]) -> dict[str, int]:
        from dagster import AssetKey, DagsterEventType

        return dict(
            self.instance.event_log_storage.get_latest_storage_id_by_partition(
                AssetKey(list(asset)), DagsterEventType.ASSET_MATERIALIZATION
            )
        )

    def unmaterialized_attempts(self, asset: Sequence[str]) -> dict[str, str]:
        from dagster import AssetKey

        storage = self.instance.event_log_storage
        attempts = (
            storage.get_latest_asset_partition_materialization_attempts_without_materializations(  # noqa: E501
                AssetKey(list(asset))
            )
        )
        return {partition: run_id for partition, (run_id, _) in attempts.items()}

    def first_materialization_after(self, asset: Sequence[str], moment: dt.datetime) -> int | None:
        from dagster import AssetKey, AssetRecordsFilter

        first = self.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(list(asset)), after_timestamp=moment.timestamp()),
            limit=1,
            ascending=True,
        ).records
        return first[0].storage_id if first else None

    def run_statuses(self, run_ids: Sequence[str]) -> dict[str, str]:
        from dagster import RunsFilter

        if not run_ids:
            return {}
        records = self.instance.get_run_records(RunsFilter(run_ids=list(run_ids)))
        return {r.dagster_run.run_id: r.dagster_run.status.value for r in records}

    def active_runs(self) -> dict[str, int]:
        from dagster import DagsterRunStatus, RunsFilter

        active = [
            DagsterRunStatus.QUEUED,
            DagsterRunStatus.NOT_STARTED,
            DagsterRunStatus.STARTING,
            DagsterRunStatus.STARTED,
        ]
        counts = {s.value: self.instance.get_runs_count(RunsFilter(statuses=[s])) for s in active}
        return {status: count for status, count in counts.items() if count}


LogSource = _Tables | InstanceStorage


# phlo's event log class, by the module dagster.yaml names (and the one older phlos wrote there).
EVENT_STORAGE_MODULES = ("phlo_core.runs.event_storage", "phlo_core.dagster_sqlite")


def _default_sqlite_layout(config: dict[str, Any], home: Path) -> bool:
    """Whether the instance keeps Dagster's default SQLite files under its home: no storage
    configured, or only phlo's event log class (`phlo_core.runs.event_storage`), which writes the
    same files in the same place."""
    if config.get("storage") or config.get("run_storage") or config.get("schedule_storage"):
        return False
    events = config.get("event_log_storage")
    if not events:
        return True
    base_dir = (events.get("config") or {}).get("base_dir")
    return (
        events.get("module") in EVENT_STORAGE_MODULES
        and isinstance(base_dir, str)
        and Path(base_dir) == home / "history" / "runs"
    )


def open_logs(settings: PhloSettings) -> LogSource:
    """The run logs of the Dagster instance in DAGSTER_HOME, opened to read: never created."""
    home = settings.resolved_dagster_home
    if settings.dagster_postgres_url is not None:
        from phlo_core.runs.instance import (
            InstanceError,
            connect_dagster_postgres,
            instance_config,
            sync_instance_config,
        )

        try:
            connection = connect_dagster_postgres(settings)
        except InstanceError as exc:
            raise NoInstanceError(str(exc)) from None
        sync_instance_config(settings)  # the storage in the settings, not one written before
        if (home / "dagster.yaml").read_text() == instance_config(settings):
            with connection.cursor() as cursor:
                cursor.execute("select to_regclass('runs') is not null")
                row = cursor.fetchone()
            if row and row[0]:
                return PostgresTables(connection)
            connection.close()
            raise InstanceNotCreatedError(
                "no Dagster instance in the PostgreSQL of PHLO_DAGSTER_POSTGRES_URL yet: "
                "no run was recorded there (`phlo materialize` creates it)"
            )
        connection.close()  # a dagster.yaml of the user's: read through Dagster (below)
    if not (home / "dagster.yaml").is_file():
        raise InstanceNotCreatedError(
            f"no Dagster instance at {home} (DAGSTER_HOME): no run was recorded there yet "
            "(`phlo materialize` creates it), or point DAGSTER_HOME at the instance to read"
        )
    import yaml

    try:
        config = yaml.safe_load((home / "dagster.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise NoInstanceError(f"cannot read {home / 'dagster.yaml'}: {exc}") from None
    if _default_sqlite_layout(config, home) and (home / "history" / "runs.db").is_file():
        return SqliteFiles(home)
    from dagster import DagsterInstance

    try:
        instance = DagsterInstance.from_config(str(home))
        if settings.dagster_postgres_url is not None:
            from phlo_core.runs.instance import keep_connections_open

            keep_connections_open(instance)  # --follow polls: one connection, not one a poll
        instance.get_run_records(limit=1)
    except Exception as exc:
        from phlo_core.redact import redact

        reason = redact((str(exc).strip().splitlines() or [type(exc).__name__])[0])
        raise NoInstanceError(f"cannot read the Dagster instance at {home}: {reason}") from None
    return InstanceStorage(instance)
