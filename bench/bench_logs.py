"""`phlo logs` on an instance holding 2,000 runs and 1,000,000 events, each case as a ratio to
the same answer computed by loading every event through the instance (`instance.all_logs` for
every run) and filtering in Python, measured once in the same run; and to `import dagster` and
to opening Dagster's instance in a fresh process (what `phlo logs` avoids on SQLite). `read_entries`
in process shows the query's own time.

The instance is built from real runs: one glucose run, one weather run and one failing glucose
run are materialized against the sample servers; their runs and events are the templates. The
other runs are copies with new ids, spread over the last 3 days (about 1 in 50 failed), each
with its events padded to size with its own log lines and engine events, written straight into
the run storage, the per-run event shards and the index shard.

Then the same instance copied into PostgreSQL (a server started as `phlo services up` starts
it; Dagster's production storage: one event_logs table) and every case again.

Results go to bench/results/<date>-logs.json.

    .venv/bin/python bench/bench_logs.py [--repeat 3] [--runs 2000] [--events 1000000]
                                         [--no-postgres]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from locations.nightscout.sample_server import SampleNightscoutServer
from locations.weather.sample_server import SampleOpenMeteoServer
from phlo_core.calendar import parse_day_range
from phlo_core.runlogs.model import EVENT_LEVELS, LEVEL_NAMES, LEVELS, LogFilter, parse_since
from phlo_core.runlogs.read import read_entries, resolve_run_id
from phlo_core.runlogs.stores import open_logs
from phlo_core.runs.engine import materialize
from phlo_core.services import control as services
from phlo_core.settings import PhloSettings, load_settings
from ratios import Ratios, command, timed

if TYPE_CHECKING:
    from dagster import DagsterInstance
    from dagster._core.events.log import EventLogEntry

PHLO = str(Path(sys.executable).with_name("phlo"))
ASSET = "stg_glucose_entries"
GLUCOSE = "dlt_glucose_entries,stg_glucose_entries"
SPAN = dt.timedelta(days=3)
STEP_SECONDS = 0.01  # between two events of a run
OPEN_INSTANCE = (  # what reading through Dagster's storage classes costs before any query
    "import os\n"
    "from dagster import DagsterInstance\n"
    "DagsterInstance.from_config(os.environ['DAGSTER_HOME']).get_run_records(limit=1)"
)
RUN = "\x00run\x00"  # placeholders in an event template
STAMP = "\x00timestamp\x00"
STEP_BOUNDS = {"STEP_START", "STEP_SUCCESS", "STEP_FAILURE"}  # never repeated as padding

Row = tuple[str, str, str, str]  # timestamp (ISO), run id, event type, level: as --json shows


@dataclass
class Event:
    text: str  # serialized EventLogEntry with RUN and STAMP placeholders
    event_type: str | None
    step_key: str | None
    asset_key: str | None
    partition: str | None
    level: int


@dataclass
class Template:
    """A real run: its run row, tags and events, to copy."""

    run_id: str
    status: str
    columns: dict[str, Any]  # the runs table's row
    tags: list[tuple[str, str]]
    events: list[Event]

    def padding(self) -> list[Event]:
        """Events to repeat: log lines below ERROR alternating with engine events."""
        lines = [e for e in self.events if e.event_type is None and e.level < LEVELS["ERROR"]]
        engine = [
            e
            for e in self.events
            if e.event_type is not None
            and e.event_type not in EVENT_LEVELS
            and e.event_type not in STEP_BOUNDS
            and not e.event_type.endswith("_PLANNED")
        ]
        return [
            event
            for pair in zip(lines * len(engine), engine * len(lines), strict=True)
            for event in pair
        ]

    def expanded(self, size: int) -> list[Event]:
        """`size` events: the run's own, padding inserted after its first log line."""
        padding = self.padding()
        extra = [padding[i % len(padding)] for i in range(max(0, size - len(self.events)))]
        first_line = next(i for i, e in enumerate(self.events) if e.event_type is None)
        return self.events[: first_line + 1] + extra + self.events[first_line + 1 :]


def column_time(timestamp: float) -> str:
    """A timestamp as Dagster's SQLite storage writes it (naive UTC)."""
    return (
        dt.datetime.fromtimestamp(timestamp, dt.UTC)
        .replace(tzinfo=None)
        .isoformat(" ", "microseconds")
    )


def iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat()


def real_runs(home: Path) -> None:
    """One glucose run, one weather run and one glucose run that fails (HTTP 503 twice)."""
    with SampleNightscoutServer() as nightscout, SampleOpenMeteoServer() as weather:
        settings = load_settings(
            phlo_home=home,
            nightscout_url=nightscout.url,
            open_meteo_url=weather.url,
            open_meteo_forecast_url=weather.url,
            http_max_attempts=2,
            http_backoff_seconds=0.01,
        )
        day = parse_day_range("2024-02-01")
        for selection in [GLUCOSE, "dlt_weather_observations,stg_weather_observations"]:
            assert all(o.success for o in materialize(selection, day, settings))
        nightscout.fail_next(10, 503)
        outcomes = materialize(GLUCOSE, day, settings, log_level="CRITICAL")
        assert not any(o.success for o in outcomes)


def templates(instance: DagsterInstance, shards: Path) -> list[Template]:
    from dagster._core.storage.runs.schema import RunsTable, RunTagsTable
    from dagster._core.storage.runs.sql_run_storage import SqlRunStorage

    storage = instance.run_storage
    assert isinstance(storage, SqlRunStorage)
    found = []
    with storage.connect() as con:
        runs = [dict(row._mapping) for row in con.execute(RunsTable.select())]
        tags = list(con.execute(RunTagsTable.select()))
    for run in runs:
        run_id = run["run_id"]
        with closing(sqlite3.connect(shards / f"{run_id}.db")) as shard:
            rows = shard.execute(
                "select event, dagster_event_type, step_key, asset_key, partition "
                "from event_logs order by id"
            ).fetchall()
        events = []
        for text, event_type, step_key, asset_key, partition in rows:
            entry = json.loads(text)
            stamp = f'"timestamp": {entry["timestamp"]!r}'
            assert stamp in text, stamp
            text = text.replace(run_id, RUN).replace(stamp, f'"timestamp": {STAMP}')
            events.append(Event(text, event_type, step_key, asset_key, partition, entry["level"]))
        run_tags = [(t.key, t.value) for t in tags if t.run_id == run_id]
        found.append(Template(run_id, run["status"], run, run_tags, events))
    return found


def build(
    instance: DagsterInstance, dagster_home: Path, runs: int, events: int, seed: int = 0
) -> list[str]:
    """Add runs (and their events) until the instance holds `runs` runs and about `events`
    events; the new run ids, newest first."""
    from dagster._core.storage.runs.schema import RunsTable, RunTagsTable
    from dagster._core.storage.runs.sql_run_storage import SqlRunStorage

    shards = dagster_home / "history" / "runs"
    with closing(sqlite3.connect(shards / "index.db")) as index:
        indexed_types = {
            t for (t,) in index.execute("select distinct dagster_event_type from event_logs")
        }
    real = templates(instance, shards)
    failed = [t for t in real if t.status == "FAILURE"]
    succeeded = [t for t in real if t.status == "SUCCESS"]
    assert failed and len(succeeded) >= 2
    new_runs = runs - len(real)
    per_run = (events - sum(len(t.events) for t in real)) // new_runs

    empty = shards.parent / "empty-shard.db"
    shutil.copyfile(shards / f"{real[0].run_id}.db", empty)
    with closing(sqlite3.connect(empty)) as con:
        con.execute("delete from event_logs")
        con.commit()
        con.execute("vacuum")

    rng = random.Random(seed)
    newest = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    run_rows: list[dict[str, Any]] = []
    tag_rows: list[dict[str, str]] = []
    index_rows: list[tuple[Any, ...]] = []
    run_ids = []
    for i in range(new_runs):
        template = failed[0] if i % 50 == 17 else succeeded[rng.randrange(len(succeeded))]
        run_id = str(uuid.uuid4())
        run_ids.append(run_id)
        end = (newest - SPAN * ((i + rng.random() * 0.5) / new_runs)).timestamp()
        planned = template.expanded(per_run)
        first = end - STEP_SECONDS * (len(planned) - 1)
        rows = []
        start_time = first
        for k, event in enumerate(planned):
            stamp = first + k * STEP_SECONDS
            row = (
                run_id,
                event.text.replace(RUN, run_id).replace(STAMP, repr(stamp)),
                event.event_type,
                column_time(stamp),
                event.step_key,
                event.asset_key,
                event.partition,
            )
            rows.append(row)
            if event.event_type in indexed_types:
                index_rows.append(row)
            if event.event_type == "PIPELINE_START":
                start_time = stamp
        shard = shards / f"{run_id}.db"
        shutil.copyfile(empty, shard)
        with closing(sqlite3.connect(shard)) as con:
            con.execute("pragma synchronous = off")
            con.executemany(
                "insert into event_logs (run_id, event, dagster_event_type, timestamp, step_key,"
                " asset_key, partition) values (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            con.commit()
        columns = template.columns
        run_rows.append(
            {
                "run_id": run_id,
                "snapshot_id": columns["snapshot_id"],
                "pipeline_name": columns["pipeline_name"],
                "status": columns["status"],
                "run_body": columns["run_body"].replace(template.run_id, run_id),
                "partition": columns["partition"],
                "partition_set": columns["partition_set"],
                "create_timestamp": dt.datetime.fromtimestamp(first - 0.1, dt.UTC).replace(
                    tzinfo=None
                ),
                "update_timestamp": dt.datetime.fromtimestamp(end, dt.UTC).replace(tzinfo=None),
                "start_time": start_time,
                "end_time": end,
            }
        )
        tag_rows += [{"run_id": run_id, "key": k, "value": v} for k, v in template.tags]
    empty.unlink()

    storage = instance.run_storage
    assert isinstance(storage, SqlRunStorage)
    run_rows.reverse()  # oldest first, as they would have been added
    with storage.connect() as con:
        con.execute(RunsTable.insert(), run_rows)
        con.execute(RunTagsTable.insert(), tag_rows)
    index_rows.sort(key=lambda row: row[3])
    with closing(sqlite3.connect(shards / "index.db")) as index:
        index.executemany(
            "insert into event_logs (run_id, event, dagster_event_type, timestamp, step_key,"
            " asset_key, partition) values (?, ?, ?, ?, ?, ?, ?)",
            index_rows,
        )
        index.commit()
    return run_ids


def counts(dagster_home: Path) -> tuple[int, int]:
    """Runs and events in the instance (counted in the files)."""
    shards = dagster_home / "history" / "runs"
    with closing(sqlite3.connect(dagster_home / "history" / "runs.db")) as con:
        (runs,) = con.execute("select count(*) from runs").fetchone()
    events = 0
    for shard in shards.glob("*-*.db"):
        with closing(sqlite3.connect(f"file:{shard}?mode=ro", uri=True)) as con:
            events += con.execute("select count(*) from event_logs").fetchone()[0]
    return runs, events


def copy_to_postgres(dagster_home: Path, connection: Any) -> None:
    """The SQLite instance's runs, tags, snapshots, asset keys and every run's events into a
    PostgreSQL instance Dagster created (dagster-postgres: one event_logs table), events run
    after run in the order they were written."""
    import csv
    import io

    history = dagster_home / "history"

    def copy_table(source: Path, table: str) -> None:
        with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as con:
            cursor = con.execute(f"select * from {table} order by id")
            names = [d[0] for d in cursor.description if d[0] != "id"]
            every = [d[0] for d in cursor.description]
            rows = [dict(zip(every, row, strict=True)) for row in cursor]
        with connection.cursor() as pg:
            pg.execute(f"select * from {table} limit 0")
            wanted = [n for n in names if n in {d[0] for d in pg.description}]
            quoted = ", ".join(f'"{n}"' for n in wanted)
            pg.executemany(
                f"insert into {table} ({quoted}) values ({', '.join('%s' for _ in wanted)})",
                [[row[n] for n in wanted] for row in rows],
            )

    copy_table(history / "runs.db", "snapshots")
    copy_table(history / "runs.db", "runs")
    copy_table(history / "runs.db", "run_tags")
    copy_table(history / "runs" / "index.db", "asset_keys")
    with closing(sqlite3.connect(history / "runs.db")) as con:
        order = [r for (r,) in con.execute("select run_id from runs order by create_timestamp")]
    columns = "run_id, event, dagster_event_type, timestamp, step_key, asset_key, partition"
    for start in range(0, len(order), 100):
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for run_id in order[start : start + 100]:
            with closing(sqlite3.connect(history / "runs" / f"{run_id}.db")) as shard:
                writer.writerows(shard.execute(f"select {columns} from event_logs order by id"))
        buffer.seek(0)
        with connection.cursor() as pg:
            pg.copy_expert(f"copy event_logs ({columns}) from stdin with (format csv)", buffer)
    with connection.cursor() as pg:
        pg.execute("analyze")


def level_of(entry: EventLogEntry) -> int:
    """The level `phlo logs` shows an entry at."""
    event = entry.dagster_event
    if event is None:
        return entry.level if isinstance(entry.level, int) else LEVELS.get(str(entry.level), 20)
    if event.event_type_value == "ASSET_CHECK_EVALUATION":
        passed = getattr(event.event_specific_data, "passed", True)
        return LEVELS["INFO"] if passed else LEVELS["WARNING"]
    return EVENT_LEVELS[event.event_type_value]


@dataclass
class Case:
    """One `phlo logs` invocation, and the same answer computed in Python from every event."""

    label: str
    args: list[str]
    logs: LogFilter
    select: Callable[[str, Sequence[EventLogEntry]], list[tuple[float, int, Row]]]
    matches: list[tuple[float, int, Row]] = field(default_factory=list)
    python_seconds: float = 0.0

    def answer(self, limit: int) -> list[Row]:
        started = time.perf_counter()
        newest = sorted(self.matches, key=lambda m: (m[0], m[1]))[-limit:]
        self.python_seconds += time.perf_counter() - started
        return [row for _, _, row in newest]


def shown(run_id: str, entries: Sequence[EventLogEntry]) -> list[tuple[float, int, EventLogEntry]]:
    return [
        (e.timestamp, i, e)
        for i, e in enumerate(entries)
        if e.dagster_event is None or e.dagster_event.event_type_value in EVENT_LEVELS
    ]


def as_row(entry: EventLogEntry) -> Row:
    event_type = entry.dagster_event.event_type_value if entry.dagster_event else "LOG"
    return (iso(entry.timestamp), entry.run_id, event_type, LEVEL_NAMES[level_of(entry)])


def cases(run_id: str, since: dt.datetime) -> list[Case]:
    from dagster import AssetKey

    key = AssetKey.from_user_string(ASSET)

    def everything(run: str, entries: Sequence[EventLogEntry]) -> list[tuple[float, int, Row]]:
        return [(t, i, as_row(e)) for t, i, e in shown(run, entries)]

    def of_asset(run: str, entries: Sequence[EventLogEntry]) -> list[tuple[float, int, Row]]:
        steps = {
            e.step_key for e in entries if e.dagster_event and e.dagster_event.asset_key == key
        }
        found = []
        for t, i, e in shown(run, entries):
            event = e.dagster_event
            kind = event.event_type_value if event else None
            if (
                (kind == "ASSET_MATERIALIZATION" and event and event.asset_key == key)
                or (
                    kind == "ASSET_CHECK_EVALUATION"
                    and event
                    and getattr(event.event_specific_data, "asset_key", None) == key
                )
                or (kind in (None, "STEP_FAILURE") and e.step_key in steps)
            ):
                found.append((t, i, as_row(e)))
        return found

    def errors(run: str, entries: Sequence[EventLogEntry]) -> list[tuple[float, int, Row]]:
        after = since.timestamp()
        return [
            (t, i, as_row(e))
            for t, i, e in shown(run, entries)
            if t >= after and level_of(e) >= LEVELS["ERROR"]
        ]

    def of_run(run: str, entries: Sequence[EventLogEntry]) -> list[tuple[float, int, Row]]:
        return everything(run, entries) if run == run_id else []

    prefix = run_id[:8]
    return [
        Case("(no filter)", [], LogFilter(), everything),
        Case(f"--asset {ASSET}", ["--asset", ASSET], LogFilter(asset=ASSET), of_asset),
        Case(
            "--level ERROR --since 1d",
            ["--level", "ERROR", "--since", "1d"],
            LogFilter(level=LEVELS["ERROR"], since=since),
            errors,
        ),
        Case(f"--run-id {prefix}", ["--run-id", prefix], LogFilter(run_ids=[run_id]), of_run),
    ]


def load_everything(instance: DagsterInstance, all_cases: Sequence[Case]) -> float:
    """Every event of every run through the instance, each case's filter applied to each run;
    the loading time (the filters' time is added to each case)."""
    loading = 0.0
    started = time.perf_counter()
    records = instance.get_run_records(limit=None)
    loading += time.perf_counter() - started
    for record in records:
        run_id = record.dagster_run.run_id
        started = time.perf_counter()
        entries = instance.all_logs(run_id)
        loading += time.perf_counter() - started
        for case in all_cases:
            started = time.perf_counter()
            case.matches += case.select(run_id, entries)
            case.python_seconds += time.perf_counter() - started
    return loading


def cli_rows(args: Sequence[str], env: dict[str, str]) -> list[Row]:
    out = subprocess.run(
        [PHLO, "logs", *args, "--limit", "100", "--json"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    entries = [json.loads(line) for line in out.splitlines()]
    return [(e["timestamp"], e["run_id"], e["event_type"], e["level"]) for e in entries]


def measure(
    ratios: Ratios,
    storage: str,
    settings: PhloSettings,
    env: dict[str, str],
    run_ids: Sequence[str],
    repeat: int,
) -> list[str]:
    """Every case at the command line and in process, against loading every event through
    the instance; the CLI's answers checked against the ones computed from every event. What
    was wrong, if anything."""
    from phlo_core.runs.instance import instance_for

    record = ratios.record
    instance = instance_for(settings)
    chosen = next(
        r
        for r in run_ids[len(run_ids) // 2 :]
        if not any(o != r and o.startswith(r[:8]) for o in run_ids)
    )
    all_cases = cases(chosen, parse_since("1d"))
    open_only = timed(command(sys.executable, "-c", OPEN_INSTANCE, env=env), repeat)
    cli: dict[str, float] = {}
    in_process: dict[str, float] = {}
    for case in all_cases:
        cli[case.label] = timed(
            command(PHLO, "logs", *case.args, "--limit", "100", env=env), repeat
        )

        def query(case: Case = case) -> None:
            source = open_logs(settings)
            if case.logs.run_ids:
                resolve_run_id(source, case.logs.run_ids[0][:8])
            read_entries(source, case.logs)

        in_process[case.label] = timed(query, repeat)

    one_run = timed(lambda: instance.all_logs(chosen), 1)
    loading = load_everything(instance, all_cases)
    print(f"{storage}: all_logs of every run: {loading:.1f} s")
    answers = {case.label: case.answer(100) for case in all_cases}
    baseline = "all_logs of every run + Python filter"
    for case in all_cases:
        seconds = cli[case.label]
        python = loading + case.python_seconds
        record(f"{storage}: phlo logs {case.label}", seconds, baseline, python)
        record(
            f"{storage}: phlo logs {case.label}",
            seconds,
            "python: open Dagster's instance",
            open_only,
        )
        record(f"{storage}: read_entries {case.label}", in_process[case.label], baseline, python)
    run_case = all_cases[3]
    record(
        f"{storage}: read_entries {run_case.label}",
        in_process[run_case.label],
        "instance.all_logs(that run)",
        one_run,
    )

    wrong = []
    for case in all_cases:
        got = cli_rows(case.args, env)
        want = answers[case.label]
        print(
            f"{storage}: {case.label:<44} {len(got):4} entries, from every event {len(want):4}: "
            f"{'same' if got == want else 'DIFFERENT'}"
        )
        if got != want and case is not all_cases[2]:
            wrong.append(f"{storage}: {case.label}: {len(got)} entries, {len(want)} expected")
        if case is run_case and not ({r[1] for r in got} == {chosen} and len(got) == 100):
            wrong.append(f"{storage}: {case.label}: entries of other runs, or not 100")
        if case is all_cases[2] and not (got and all(r[3] == "ERROR" for r in got)):
            levels = sorted({r[3] for r in got})
            wrong.append(f"{storage}: {case.label}: none, or not all ERROR: {levels}")
    return wrong


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--no-postgres", action="store_true", help="SQLite only (no PostgreSQL server started)"
    )
    args = parser.parse_args()
    ratios = Ratios()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        dagster_home = home / "dagster"
        started = time.perf_counter()
        real_runs(home)
        from phlo_core.runs.instance import connect_dagster_postgres, instance_for

        settings = load_settings(phlo_home=home)
        real_seconds = time.perf_counter() - started
        run_ids = build(instance_for(settings), dagster_home, args.runs, args.events)
        build_seconds = time.perf_counter() - started
        runs, events = counts(dagster_home)
        size = sum(f.stat().st_size for f in dagster_home.rglob("*.db")) / 1e9
        print(
            f"built {runs} runs, {events} events ({size:.2f} GB) in {build_seconds:.0f} s "
            f"({real_seconds:.0f} s of it the 3 real runs)"
        )
        ratios.record(
            f"build {runs} runs, {events} events", build_seconds, "the 3 real runs", real_seconds
        )
        ratios.record(
            "python -c 'import dagster'",
            timed(command(sys.executable, "-c", "import dagster"), args.repeat),
            "python -c 'pass'",
            timed(command(sys.executable, "-c", "pass"), args.repeat),
        )
        env = {"PHLO_HOME": str(home), "DAGSTER_HOME": str(dagster_home)}
        wrong = measure(ratios, "sqlite", settings, env, run_ids, args.repeat)

        if not args.no_postgres:
            # The same instance in PostgreSQL (Dagster's production storage), from a server
            # started as `phlo services up` starts it.
            servers = load_settings(phlo_home=Path(tmp) / "services")
            services.up(servers)
            try:
                profile = services.provision(servers, "bench")
                pg_home = Path(tmp) / "pg-home"
                pg = load_settings(
                    phlo_home=pg_home, **{key.lower(): value for key, value in profile.items()}
                )
                instance_for(pg).get_run_records(limit=1)  # Dagster creates its tables
                started = time.perf_counter()
                copy_to_postgres(dagster_home, connect_dagster_postgres(pg))
                print(f"copied into PostgreSQL in {time.perf_counter() - started:.0f} s")
                env = {
                    "PHLO_HOME": str(pg_home),
                    "DAGSTER_HOME": str(pg_home / "dagster"),
                    **profile,
                }
                wrong += measure(ratios, "postgresql", pg, env, run_ids, args.repeat)
            finally:
                services.down(servers)
    ratios.write("logs")
    assert not wrong, wrong


if __name__ == "__main__":
    main()
