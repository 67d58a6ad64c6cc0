"""Run logs from the Dagster instance's own event log, filtered where the data is.

An entry is a log line a step wrote (`context.log`), or one of the events worth reading: a run
started, succeeded, failed or was canceled, a step failed (with its error), an asset was
materialized, a check was evaluated. Filters (run, job, asset, level, time, backfill) become
SQL on the event log: the run storage picks the runs, then each run's events are selected with
a WHERE clause and a LIMIT, newest first, until enough are found. SQLite instances keep one
event file per run (read here directly, read-only); others (one `event_logs` table, such as
PostgreSQL) are read through the storage's own connection.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dagster import DagsterInstance
    from dagster._core.storage.dagster_run import RunRecord

    from phlo_core.settings import PhloSettings

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
LEVEL_NAMES = {number: name for name, number in LEVELS.items()}
BACKFILL_TAG = "dagster/backfill"

# The events shown, with the level each is shown at (check evaluations: WARNING when failed).
EVENT_LEVELS = {
    "PIPELINE_START": 20,
    "PIPELINE_SUCCESS": 20,
    "PIPELINE_FAILURE": 40,
    "PIPELINE_CANCELED": 30,
    "STEP_FAILURE": 40,
    "ASSET_MATERIALIZATION": 20,
    "ASSET_CHECK_EVALUATION": 20,
}
_CHECK = "ASSET_CHECK_EVALUATION"
_SHOWN_TYPES = ", ".join(f"'{name}'" for name in EVENT_LEVELS)


class LogsError(ValueError):
    """Bad input to `phlo logs` (an unknown run, a malformed --since): a usage error."""


class NoInstanceError(RuntimeError):
    """There is no Dagster instance where the settings point, or it cannot be read."""


def open_instance(settings: PhloSettings) -> DagsterInstance:
    """The Dagster instance in DAGSTER_HOME, opened to read: never created here."""
    from dagster import DagsterInstance

    home = settings.resolved_dagster_home
    if not (home / "dagster.yaml").is_file():
        raise NoInstanceError(
            f"no Dagster instance at {home} (DAGSTER_HOME): no run was recorded there yet "
            "(`phlo materialize` creates it), or point DAGSTER_HOME at the instance to read"
        )
    try:
        instance = DagsterInstance.from_config(str(home))
        instance.get_run_records(limit=1)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise NoInstanceError(f"cannot read the Dagster instance at {home}: {reason}") from None
    return instance


@dataclass(frozen=True)
class LogFilter:
    run_ids: Sequence[str] | None = None
    job: str | None = None
    asset: str | None = None
    level: int = LEVELS["DEBUG"]
    since: dt.datetime | None = None  # aware
    backfill: str | None = None
    limit: int = 100
    with_unfinished: bool = False  # also runs still going that were updated before `since`


@dataclass(frozen=True)
class LogEntry:
    storage_id: int
    timestamp: float
    level: int
    run_id: str
    job: str
    step: str | None
    asset: str | None
    event_type: str | None  # None for a log line
    message: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    stack: str | None = None

    @property
    def level_name(self) -> str:
        return LEVEL_NAMES.get(self.level, str(self.level))

    def as_json(self) -> dict[str, Any]:
        return {
            "timestamp": dt.datetime.fromtimestamp(self.timestamp, dt.UTC).isoformat(),
            "level": self.level_name,
            "run_id": self.run_id,
            "job": self.job,
            "step": self.step,
            "asset": self.asset,
            "event_type": self.event_type or "LOG",
            "message": self.message,
            "fields": dict(self.fields),
            **({"stack": self.stack} if self.stack else {}),
        }


_SINCE = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """`30m`, `1h`, `2d`, `1h30m` before now (UTC)."""
    match = _SINCE.fullmatch(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise LogsError(f"--since {text!r} is not a duration: use e.g. 30m, 1h, 2d or 1h30m")
    days, hours, minutes, seconds = (int(group or 0) for group in match.groups())
    span = dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    return (now or dt.datetime.now(dt.UTC)) - span


def parse_level(text: str) -> int:
    level = LEVELS.get(text.strip().upper())
    if level is None:
        raise LogsError(f"--level {text!r} is not one of {', '.join(LEVELS)}")
    return level


def resolve_run_id(instance: DagsterInstance, prefix: str) -> str:
    """The run whose id starts with `prefix`; LogsError if none or several do."""

    cleaned = prefix.strip().lower()
    if not re.fullmatch(r"[0-9a-f-]{1,36}", cleaned):
        raise LogsError(f"--run-id {prefix!r} is not a run id (hexadecimal, e.g. 3f2a9c1b)")
    if len(cleaned) == 36:
        if instance.get_run_by_id(cleaned) is None:
            raise LogsError(f"no run {cleaned} in this Dagster instance")
        return cleaned
    # A prefix is matched by the run storage (an indexed LIKE), not by loading every run.
    import sqlalchemy as sa
    from dagster._core.storage.runs.schema import RunsTable

    storage = instance.run_storage
    connect = getattr(storage, "connect", None)
    if connect is None:  # not a SQL run storage: ask it run by run
        matches = [
            r.dagster_run.run_id
            for r in instance.get_run_records(limit=None)
            if r.dagster_run.run_id.startswith(cleaned)
        ]
    else:
        query = (
            sa.select(RunsTable.c.run_id)
            .where(RunsTable.c.run_id.like(f"{cleaned}%"))
            .order_by(RunsTable.c.id.desc())
            .limit(6)
        )
        with connect() as con:
            matches = [row[0] for row in con.execute(query)]
    if not matches:
        raise LogsError(f"no run id starts with {cleaned!r} in this Dagster instance")
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (" ..." if len(matches) > 5 else "")
        raise LogsError(f"--run-id {cleaned!r} matches several runs: {shown}")
    return matches[0]


def _runs(instance: DagsterInstance, logs: LogFilter) -> list[RunRecord]:
    """The runs the filter can find entries in, most recently updated first."""
    from dagster import AssetKey, DagsterRunStatus, RunsFilter

    run_ids = list(logs.run_ids) if logs.run_ids is not None else None
    if logs.asset is not None:
        # Runs that planned the asset, from the event log's asset index (not every event).
        with warnings.catch_warnings():  # deprecated for Dagster 2.0, its replacement not out
            warnings.simplefilter("ignore", DeprecationWarning)
            planned = instance.fetch_planned_materializations(
                AssetKey.from_user_string(logs.asset), limit=100_000
            )
        touched = {record.run_id for record in planned.records}
        run_ids = sorted(touched if run_ids is None else touched & set(run_ids))
        if not run_ids:
            return []
    filters = RunsFilter(
        run_ids=run_ids,
        job_name=logs.job,
        updated_after=logs.since,
        tags={BACKFILL_TAG: logs.backfill} if logs.backfill else None,
    )
    records = {r.dagster_run.run_id: r for r in instance.get_run_records(filters, limit=None)}
    if logs.with_unfinished and logs.since is not None:
        # A run that is still going may log long after its last status change.
        going = RunsFilter(
            run_ids=run_ids,
            job_name=logs.job,
            statuses=[
                DagsterRunStatus.STARTING,
                DagsterRunStatus.STARTED,
                DagsterRunStatus.CANCELING,
            ],
            tags=filters.tags,
        )
        records |= {r.dagster_run.run_id: r for r in instance.get_run_records(going, limit=None)}
    return sorted(records.values(), key=lambda r: r.update_timestamp, reverse=True)


def _json(path: str, dialect: str) -> str:
    """SQL for a value inside the serialized event (`level`, `dagster_event.x.y`) as text or
    number, in the storage's dialect."""
    if dialect == "postgresql":
        return f"(event::jsonb #>> '{{{path.replace('.', ',')}}}')"
    return f"json_extract(event, '$.{path}')"


def _where(logs: LogFilter, after: int | None, dialect: str) -> tuple[str, dict[str, Any]]:
    clauses = [f"(dagster_event_type is null or dagster_event_type in ({_SHOWN_TYPES}))"]
    params: dict[str, Any] = {}
    if logs.since is not None:
        clauses.append("timestamp >= :since")
        params["since"] = (
            logs.since.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        )
    if after is not None:
        clauses.append("id > :after")
        params["after"] = after
    if logs.asset is not None:
        # Its materializations, its checks, and the log lines and failures of the steps that
        # computed it (a dbt step computes many models: its lines show for each).
        check_asset = _json("dagster_event.event_specific_data.asset_key.path", dialect)
        if dialect == "postgresql":
            check_asset = (
                "(event::jsonb #> '{dagster_event,event_specific_data,asset_key,path}')::text"
            )
        clauses.append(
            "((dagster_event_type = 'ASSET_MATERIALIZATION' and asset_key = :asset_key)"
            f" or (dagster_event_type = '{_CHECK}' and {check_asset} = :asset_path)"
            " or ((dagster_event_type is null or dagster_event_type = 'STEP_FAILURE')"
            " and step_key in (select step_key from event_logs where run_id = :run_id"
            " and asset_key = :asset_key and step_key is not null)))"
        )
        params["asset_key"] = json.dumps([logs.asset])
        params["asset_path"] = json.dumps(
            [logs.asset], separators=(",", ":") if dialect != "postgresql" else (", ", ": ")
        )
    if logs.level > LEVELS["DEBUG"]:
        fixed = [name for name, level in EVENT_LEVELS.items() if level >= logs.level]
        ors = [
            f"(dagster_event_type is null and cast({_json('level', dialect)} as integer) >= :level)"
        ]
        if fixed:
            ors.append(f"dagster_event_type in ({', '.join(repr(name) for name in fixed)})")
        if logs.level <= LEVELS["WARNING"]:
            failed = _json("dagster_event.event_specific_data.success", dialect)
            false = "'false'" if dialect == "postgresql" else "0"
            ors.append(f"(dagster_event_type = '{_CHECK}' and {failed} = {false})")
        clauses.append(f"({' or '.join(ors)})")
        params["level"] = logs.level
    return " and ".join(clauses), params


def _select(
    logs: LogFilter, after: int | None, limit: int, dialect: str
) -> tuple[str, dict[str, Any]]:
    where, params = _where(logs, after, dialect)
    sql = (
        "select id, event, dagster_event_type from event_logs "
        f"where run_id = :run_id and {where} order by id desc limit {int(limit)}"
    )
    return sql, params


def _rows(
    instance: DagsterInstance, run_id: str, logs: LogFilter, after: int | None
) -> list[tuple[int, str, str | None]]:
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    storage = instance.event_log_storage
    if isinstance(storage, SqliteEventLogStorage):
        path = Path(storage.path_for_shard(run_id))
        if not path.exists():
            return []
        sql, params = _select(logs, after, logs.limit, "sqlite")
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as con:
            return con.execute(sql, {**params, "run_id": run_id}).fetchall()
    import sqlalchemy as sa

    with storage.run_connection(run_id) as con:  # pyright: ignore[reportAttributeAccessIssue]
        sql, params = _select(logs, after, logs.limit, con.dialect.name)
        return [tuple(row) for row in con.execute(sa.text(sql), {**params, "run_id": run_id})]


def _entry(row: tuple[int, str, str | None], job: str) -> LogEntry | None:
    from dagster import deserialize_value
    from dagster._core.events.log import EventLogEntry

    storage_id, text, event_type = row
    record = deserialize_value(text, EventLogEntry)
    event = record.dagster_event
    stored = record.level if isinstance(record.level, int) else LEVELS.get(str(record.level), 20)
    level = stored if event is None else EVENT_LEVELS.get(event_type or "", stored)
    fields: dict[str, Any] = {}
    stack = None
    asset = None
    message = record.user_message
    if event is None:
        from phlo_core.log import parse_fields

        message, fields = parse_fields(message)
    else:
        data = event.event_specific_data
        message = event.message or message
        if event.asset_key is not None:
            asset = event.asset_key.to_user_string()
        if event_type == "ASSET_MATERIALIZATION" and event.step_materialization_data:
            materialization = event.step_materialization_data.materialization
            fields = {k: _plain(v) for k, v in materialization.metadata.items()}
            if materialization.partition:
                fields["partition"] = materialization.partition
            message = str(fields.pop("summary", "")) or f"materialized {asset}"
        elif event_type == _CHECK and data is not None:
            passed = bool(getattr(data, "passed", True))
            check_key = getattr(data, "asset_check_key", None)
            asset = check_key.asset_key.to_user_string() if check_key else asset
            name = check_key.name if check_key else "check"
            level = LEVELS["INFO"] if passed else LEVELS["WARNING"]
            fields = {"check": name, "passed": passed}
            fields |= {k: _plain(v) for k, v in (getattr(data, "metadata", None) or {}).items()}
            message = f"check {name} {'passed' if passed else 'FAILED'}"
        elif event_type == "STEP_FAILURE" and event.step_failure_data is not None:
            from phlo_core.engine import failure_message

            error = event.step_failure_data.error
            message = failure_message(event.step_failure_data)
            stack = error.to_string() if error is not None else None
        elif event_type == "PIPELINE_FAILURE" and record.error_info is not None:
            stack = record.error_info.to_string()
    from phlo_core.redact import redact

    return LogEntry(
        storage_id=storage_id,
        timestamp=record.timestamp,
        level=level,
        run_id=record.run_id,
        job=job,
        step=record.step_key,
        asset=asset,
        event_type=event_type,
        message=redact(message or ""),
        fields=fields,
        stack=redact(stack) if stack else None,
    )


def _plain(value: Any) -> Any:
    """A metadata value as JSON-friendly data."""
    inner = getattr(value, "value", value)
    if isinstance(inner, str | int | float | bool) or inner is None:
        return inner
    return str(inner)


def read_entries(
    instance: DagsterInstance, logs: LogFilter, *, after: Mapping[str, int] | None = None
) -> list[LogEntry]:
    """The newest `logs.limit` entries the filter matches, oldest first. `after` (run id ->
    storage id) skips what was already read, for --follow."""
    found: list[LogEntry] = []
    for record in _runs(instance, logs):
        run = record.dagster_run
        if len(found) >= logs.limit:
            kth = sorted((e.timestamp for e in found), reverse=True)[logs.limit - 1]
            if record.update_timestamp.timestamp() < kth:
                break  # this run and the older ones end before the newest entries found
        for row in _rows(instance, run.run_id, logs, (after or {}).get(run.run_id)):
            entry = _entry(row, run.job_name)
            if entry is not None:
                found.append(entry)
    found.sort(key=lambda e: (e.timestamp, e.storage_id))
    return found[-logs.limit :]


def follow(
    instance: DagsterInstance, logs: LogFilter, *, poll_seconds: float = 1.0
) -> Iterator[LogEntry]:
    """The newest entries, then every new one as it is stored (runs started later included),
    each once, until the caller stops iterating (Ctrl-C)."""
    import time

    seen: dict[str, int] = {}
    window = logs
    while True:
        polled = dt.datetime.now(dt.UTC)
        for entry in read_entries(instance, window, after=seen):
            if entry.storage_id > seen.get(entry.run_id, 0):
                seen[entry.run_id] = entry.storage_id
                yield entry
        # From now on: whatever is new since a little before this poll, however much, in runs
        # updated since then or still going. Entries already shown are skipped by storage id.
        since = polled - dt.timedelta(seconds=60)
        window = replace(
            logs,
            since=max(logs.since, since) if logs.since else since,
            limit=1_000_000,
            with_unfinished=True,
        )
        time.sleep(poll_seconds)
