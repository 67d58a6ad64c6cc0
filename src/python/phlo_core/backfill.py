"""`phlo backfill`: many days of a selection, in ranges, resumable, in parallel workers.

A backfill is a record in the Dagster instance (its key-value store, beside the runs): id,
selection, days, chunk size, workers, and the event-log position when it began. Its runs carry
the id as the `dagster/backfill` tag (the UI and `phlo logs --backfill` find them). What is
done is read from the instance: a day is done when every selected daily asset has a successful
materialization of it recorded after the backfill began. No state lives in a file, so a
backfill killed at any point resumes correctly.

Days go in ranges of consecutive days (`chunk_size`), one in-process run per range and code
location (dbt once per range); assets rebuilt whole (marts, publishing) run once at the end,
not once per range. With `parallel` N, this process and N-1 worker processes each run a share
of the ranges.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import IO, TYPE_CHECKING, Literal, Protocol

from phlo_core.calendar import DayRange, PartitionError, check_within, parse_day, today
from phlo_core.settings import PhloSettings

if TYPE_CHECKING:
    from dagster import AssetKey, DagsterInstance

    from phlo_core.selection import LocationPlan

BACKFILL_TAG = "dagster/backfill"
PARENT_PID = "PHLO_BACKFILL_PARENT_PID"  # a worker's parent, for it to die with
_KEY = "phlo/backfill/"
MIN_CHUNK_DAYS, MAX_CHUNK_DAYS = 31, 92


def default_chunk_size(days: int, parallel: int) -> int:
    """Days per range unless told: every worker gets at least two ranges (progress shows, a
    failure re-runs a part), a range at least a month and at most a quarter. Fewer, longer
    ranges are faster (a run's fixed cost is paid per range): a year with two workers took
    58 s in 31-day ranges, 49 s in 92-day ones."""
    wanted = -(-days // (2 * max(1, parallel)))
    return min(MAX_CHUNK_DAYS, max(MIN_CHUNK_DAYS, wanted))


def max_parallel() -> int:
    """The most workers a backfill starts here: two per CPU core this process may use. Each
    worker runs DuckDB and dbt (CPU-bound, about 0.6 GB): past that they only wait for each
    other and for memory (1,000 asked for had planned 58 workers on 2 cores)."""
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return 2 * max(1, len(usable) if usable else os.cpu_count() or 1)


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


# --- input ------------------------------------------------------------------------------------


def requested_days(
    settings: PhloSettings,
    *,
    start_date: str | None,
    end_date: str | None,
    partitions: str | None,
) -> list[dt.date]:
    """The days asked for, checked against the partitions (first day to today); BackfillError
    on anything malformed or contradictory."""
    if partitions is not None and (start_date is not None or end_date is not None):
        raise BackfillError("give either --partitions or --start-date/--end-date, not both")
    try:
        if partitions is not None:
            days = sorted({parse_day(part.strip()) for part in partitions.split(",") if part})
            if not days:
                raise BackfillError("--partitions lists no day")
        else:
            if start_date is None or end_date is None:
                raise BackfillError(
                    "give the days: --start-date and --end-date (both included), or --partitions"
                )
            start, end = parse_day(start_date), parse_day(end_date)
            if end < start:
                raise BackfillError(f"--end-date {end} is before --start-date {start}")
            days = list(DayRange(start, end + dt.timedelta(days=1)).days())
        for day in (days[0], days[-1]):
            check_within(
                DayRange(day, day + dt.timedelta(days=1)),
                settings.phlo_partition_start,
                today(settings.timezone),
            )
    except PartitionError as exc:
        raise BackfillError(str(exc)) from None
    return days


def ranges(days: Sequence[dt.date], chunk_size: int) -> list[DayRange]:
    """Consecutive days grouped into ranges of at most `chunk_size` days (a gap starts a new
    range)."""
    found: list[DayRange] = []
    start = previous = None
    for day in sorted(days):
        if start is None or previous is None:
            start = previous = day
            continue
        if day != previous + dt.timedelta(days=1) or (day - start).days >= chunk_size:
            found.append(DayRange(start, previous + dt.timedelta(days=1)))
            start = day
        previous = day
    if start is not None and previous is not None:
        found.append(DayRange(start, previous + dt.timedelta(days=1)))
    return found


# --- records in the instance -----------------------------------------------------------------


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
    from phlo_core.instance import instance_config

    if config_file.read_text() != instance_config(settings):
        return None  # the user's own instance settings, or not brought up to date yet
    if settings.dagster_postgres_url is not None:
        import psycopg2

        from phlo_core.instance import InstanceError, connect_dagster_postgres

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


# --- what is done ------------------------------------------------------------------------------


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
    from phlo_core.runlogs import InstanceStorage
    from phlo_core.status import materialized_partitions

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
    import os

    from dagster import RunsFilter
    from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES

    from phlo_core.orphans import PID_TAG, process_gone
    from phlo_core.progress import CANCEL_MESSAGE

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


# --- running -------------------------------------------------------------------------------------


@dataclass
class RangeResult:
    days: DayRange
    success: bool
    seconds: float
    errors: list[str]
    whole: bool = False  # the final run of the assets rebuilt whole, not a range of days

    def to_json(self) -> str:
        return json.dumps(
            {
                "start": self.days.start.isoformat(),
                "end": self.days.end.isoformat(),
                "success": self.success,
                "seconds": self.seconds,
                "errors": self.errors,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> RangeResult:
        data = json.loads(text)
        days = DayRange(dt.date.fromisoformat(data["start"]), dt.date.fromisoformat(data["end"]))
        return cls(days, data["success"], data["seconds"], data["errors"])


def run_range(
    backfill: Backfill,
    days: DayRange,
    settings: PhloSettings,
    part: Literal["daily", "whole"] = "daily",
) -> RangeResult:
    """One range as one in-process run per location, tagged with the backfill."""
    from phlo_core.engine import materialize

    started = time.perf_counter()
    outcomes = materialize(
        backfill.selection,
        days,
        settings,
        log_level="CRITICAL",
        allow_shrink=backfill.allow_shrink,
        extra_tags={BACKFILL_TAG: backfill.id},
        part=part,
    )
    return RangeResult(
        days,
        all(o.success for o in outcomes),
        time.perf_counter() - started,
        [f"{o.location}: {error}" for o in outcomes for error in o.errors],
        whole=part == "whole",
    )


def _caused_by_interrupt(exc: BaseException) -> bool:
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, KeyboardInterrupt) or "Interrupt" in type(error).__name__:
            return True
        pending += [error.__cause__, error.__context__]
    return False


def run_range_reported(backfill: Backfill, days: DayRange, settings: PhloSettings) -> RangeResult:
    """`run_range`, with an error that stops it (a server gone, say) as the range's failure:
    the next range still runs. Ctrl-C passes through."""
    try:
        return run_range(backfill, days, settings)
    except Exception as exc:
        from phlo_core.redact import redact

        if _caused_by_interrupt(exc):
            raise KeyboardInterrupt from None  # Ctrl-C that code wrapped (DuckDB, say)

        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        return RangeResult(days, False, 0.0, [redact(lines[0])])


def worker_environment(settings: PhloSettings) -> dict[str, str]:
    """The settings as environment variables, for a worker process to read them back."""
    from pydantic import SecretStr

    values = {**settings.model_dump(), **(settings.model_extra or {})}
    env = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[name.upper()] = value.isoformat() if isinstance(value, dt.date) else str(value)
    return env


class WorkerProcess(Protocol):
    """What `run_in_workers` uses of a worker: `subprocess.Popen`'s face."""

    @property
    def pid(self) -> int: ...

    @property
    def stdout(self) -> IO[str] | None: ...

    @property
    def returncode(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


# Starts `python -m phlo_core.backfill ARGS` with ENV, its stdout a pipe of JSON lines.
WorkerStarter = Callable[[list[str], dict[str, str]], WorkerProcess]


def start_worker_process(args: list[str], env: dict[str, str]) -> WorkerProcess:
    """A worker as a new Python process; the kernel kills it if this process dies."""
    import os
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "phlo_core.backfill", *args],
        env={**env, PARENT_PID: str(os.getpid())},
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )


def run_in_workers(
    backfill: Backfill,
    todo: Sequence[DayRange],
    settings: PhloSettings,
    workers: int,
    on_range: Callable[[RangeResult], None],
    start_worker: WorkerStarter | None = None,
) -> list[RangeResult]:
    """`workers` at once: this process and `workers - 1` worker processes, each running its
    share of the ranges in turn (round robin, so that every one starts on an early range);
    results as they come. This process has Dagster and the locations loaded already, so it
    takes a share itself rather than idle beside a worker that loads them again.
    `start_worker` starts each worker: a new process by default; the phlo server forks them
    with everything loaded when it runs the backfill."""
    import os
    import subprocess
    import threading

    env = {**os.environ, **worker_environment(settings)}
    start_worker = start_worker or start_worker_process
    shares = [list(todo[i::workers]) for i in range(workers)]
    results: list[RangeResult] = []
    lock = threading.Lock()

    def report(result: RangeResult) -> None:
        with lock:
            results.append(result)
            on_range(result)

    processes = []
    for share in shares[1:]:
        if not share:
            continue
        args = [backfill.id, *(f"{r.start.isoformat()}..{r.end.isoformat()}" for r in share)]
        processes.append(start_worker(args, env))

    def collect(process: WorkerProcess) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("{"):
                report(RangeResult.from_json(line))

    readers = [threading.Thread(target=collect, args=(p,), daemon=True) for p in processes]
    for reader in readers:
        reader.start()
    try:
        for days in shares[0]:
            report(run_range_reported(backfill, days, settings))
        for process in processes:
            process.wait()
        for reader in readers:
            reader.join(timeout=30)
    except KeyboardInterrupt:
        # The workers got the same Ctrl-C (one process group): let them cancel their runs.
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        raise
    # A worker that died (killed for memory, failed to start) reported none of its ranges or
    # only some: those are failures, not silently missing.
    reported = {(r.days.start, r.days.end) for r in results}
    for process, share in zip(processes, [s for s in shares[1:] if s], strict=True):
        for days in share:
            if (days.start, days.end) not in reported:
                report(
                    RangeResult(
                        days, False, 0.0, [f"worker process ended (exit code {process.returncode})"]
                    )
                )
    return results


@dataclass
class Plan:
    backfill: Backfill
    todo: list[dt.date]  # days still to run
    done: int  # days of the backfill already done
    ranges: list[DayRange]
    has_whole: bool  # assets rebuilt whole (marts...) run once after the ranges


def plan_backfill(
    backfill: Backfill, settings: PhloSettings, *, missing_only: bool = False
) -> Plan:
    """What is left of `backfill`: its days not yet done (by the instance), as ranges.
    `missing_only`: also skip days materialized before the backfill began."""
    from phlo_core.engine import only_part
    from phlo_core.instance import instance_for
    from phlo_core.lakehouse import lakehouse_created
    from phlo_core.selection import plan_selection
    from phlo_core.workspace import preflight

    # A record made on a bigger machine (or before the cap) runs no more workers than this.
    backfill.parallel = min(backfill.parallel, max_parallel())
    plans = plan_selection(backfill.selection, settings)
    for plan in plans:  # missing settings: one usage error, before anything is recorded
        preflight(plan.location, settings, [key.to_user_string() for key in plan.keys])
    daily = only_part(plans, daily=True)
    if not daily:
        raise BackfillError(
            f"{backfill.selection!r} has no daily-partitioned asset to backfill: materialize "
            "it with `phlo materialize`"
        )
    keys = daily_keys(daily)
    instance = instance_for(settings)
    after = None if missing_only else backfill.cursor
    done = materialized_days(instance, keys, after, lakehouse_created(settings))
    todo = [day for day in backfill.dates if day not in done]
    return Plan(
        backfill,
        todo,
        len(backfill.days) - len(todo),
        ranges(todo, backfill.chunk_size),
        bool(only_part(plans, daily=False)),
    )


def whole_plan(plan: Plan) -> Plan:
    """`plan` with every one of its backfill's days to run, done or not (a backfill without
    --missing rebuilds them all)."""
    days = plan.backfill.dates
    return Plan(plan.backfill, days, 0, ranges(days, plan.backfill.chunk_size), plan.has_whole)


def execute(
    plan: Plan,
    settings: PhloSettings,
    on_range: Callable[[RangeResult], None],
    start_worker: WorkerStarter | None = None,
) -> list[RangeResult]:
    """Run the plan's ranges (in this process, or in `parallel` workers), then, when every
    range succeeded, the assets rebuilt whole once over everything."""
    backfill = plan.backfill
    workers = min(backfill.parallel, len(plan.ranges))
    if workers > 1:
        results = run_in_workers(backfill, plan.ranges, settings, workers, on_range, start_worker)
    else:
        results = []
        for days in plan.ranges:
            result = run_range_reported(backfill, days, settings)
            results.append(result)
            on_range(result)
    if plan.has_whole and all(result.success for result in results):
        dates = backfill.dates
        whole = DayRange(dates[0], dates[-1] + dt.timedelta(days=1))
        result = run_range(backfill, whole, settings, part="whole")
        results.append(result)
        on_range(result)
    return results


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
    from phlo_core.instance import instance_for

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


# --- handed to Dagster's daemon ----------------------------------------------------------------


def daemon_running(instance: DagsterInstance, within_seconds: float = 120.0) -> bool:
    """Whether a dagster-daemon's backfill loop has reported in lately on this instance."""
    heartbeat = instance.get_daemon_heartbeats().get("BACKFILL")
    return heartbeat is not None and time.time() - heartbeat.timestamp < within_seconds


def _is_set(settings: PhloSettings, name: str) -> bool:
    """Whether a setting (phlo's own or a location's) has a value."""
    key = name.lower()
    return getattr(settings, key, None) is not None or bool((settings.model_extra or {}).get(key))


@dataclass
class Submitted:
    asset_backfill_id: str
    # Not handed over: assets rebuilt whole in a second code location (see `submit`), and those
    # that would materialize nothing for want of a setting.
    left_out: list[str]


def submit(plan: Plan, settings: PhloSettings) -> Submitted:
    """Hand what is left of the plan to Dagster: an asset backfill in the instance over the
    days still to do, which Dagster's daemon turns into runs (through the assets' backfill
    policy, on the configured run launcher) and shows on the UI's backfills page. Assets rebuilt
    whole run once after the days they read, as Dagster orders them, those of one code
    location only (the others are named in the result: materialize them afterwards). The asset
    backfill's id is the backfill's own the first time."""
    from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
    from dagster._core.execution.backfill import PartitionBackfill

    from phlo_core.instance import instance_for
    from phlo_core.publish import OPTIONAL_TAG
    from phlo_core.selection import plan_selection

    backfill = plan.backfill
    plans = plan_selection(backfill.selection, settings)
    definitions, keys, left_out = {}, [], []
    whole_from: str | None = None
    for location in plans:
        graph = location.definitions.resolve_asset_graph()
        for key in location.keys:
            needed = graph.get(key).tags.get(OPTIONAL_TAG)
            if needed and not _is_set(settings, needed):
                # It would end without a materialization, which Dagster counts as failed.
                left_out.append(f"{key.to_user_string()} ({needed} is not set)")
            elif graph.get(key).partitions_def is not None:
                keys.append(key)
            elif whole_from in (None, location.location.name):
                # Dagster 1.13 puts the unpartitioned assets an asset backfill reaches at the
                # same time in one run, whichever code location each is in, and that run
                # cannot be made: only one location's go to the daemon.
                whole_from = location.location.name
                keys.append(key)
            else:
                left_out.append(key.to_user_string())
        for assets in graph.assets_defs:
            if assets.is_materializable:  # another location's assets are that one's to build
                definitions[id(assets)] = assets
    instance = instance_for(settings)
    asset_id = backfill.id if not backfill.submitted else f"{backfill.id}.{len(backfill.submitted)}"
    request = PartitionBackfill.from_asset_partitions(
        backfill_id=asset_id,
        asset_graph=AssetGraph.from_assets(list(definitions.values())),
        partition_names=[day.isoformat() for day in plan.todo],
        asset_selection=keys,
        backfill_timestamp=time.time(),
        tags={"phlo/backfill": backfill.id},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=f"phlo backfill {backfill.selection}",
        description=f"phlo backfill {backfill.id}: {len(plan.todo)} day(s)",
        run_config=None,
    )
    instance.add_backfill(request)
    backfill.submitted.append(asset_id)
    save(instance, backfill)
    return Submitted(asset_id, sorted(left_out))


def submitted_state(instance: DagsterInstance, backfill: Backfill) -> str | None:
    """The latest asset backfill's status in Dagster (requested, completed_success...), for a
    backfill handed to the daemon."""
    if not backfill.submitted:
        return None
    found = instance.get_backfill(backfill.submitted[-1])
    return found.status.value.lower() if found is not None else "unknown"


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this worker when the process that started it dies (Linux's
    PR_SET_PDEATHSIG): a backfill killed with SIGKILL leaves no worker running on its own,
    writing days a `--resume` would run again. Elsewhere: nothing."""
    import ctypes
    import os
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the line above
        os._exit(137)


def worker_main(argv: list[str]) -> int:
    """`python -m phlo_core.backfill ID START..END ...`: run ranges, one JSON line each."""
    import os

    parent = os.environ.get(PARENT_PID)
    if parent and parent.isdigit():
        _die_with_parent(int(parent))
    from phlo_core.instance import instance_for
    from phlo_core.settings import get_settings

    settings = get_settings()
    backfill = load(instance_for(settings), argv[0])
    if backfill is None:
        return 2
    for text in argv[1:]:
        start, _, end = text.partition("..")
        days = DayRange(dt.date.fromisoformat(start), dt.date.fromisoformat(end))
        try:
            result = run_range_reported(backfill, days, settings)
        except KeyboardInterrupt:
            return 130
        print(result.to_json(), flush=True)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(worker_main(sys.argv[1:]))
