"""The `phlo` command: parses arguments, calls phlo_core, renders results, sets exit codes.

Imports of Dagster, dbt and DuckDB happen inside the commands, so `phlo --help` stays fast.
Exit codes: 0 success, 1 a run or query failed, 2 bad input (usage, selection, date, config).
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, NoReturn

from cyclopts import App, Parameter
from cyclopts.exceptions import CycloptsError

if TYPE_CHECKING:  # for annotations only: these modules load inside the commands
    from phlo_core.backfill.plan import Plan
    from phlo_core.backfill.records import Backfill
    from phlo_core.backfill.workers import RangeResult
    from phlo_core.calendar import DayRange
    from phlo_core.runs.engine import RunOutcome
    from phlo_core.runs.progress import ProgressCallback
    from phlo_core.runs.status import AssetDays
    from phlo_core.settings import PhloSettings

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a tool whose reader went away
SERVED = ("materialize", "backfill")  # run through a warm phlo server (phlo_cli.server)
MAX_LOG_LIMIT = 1_000_000_000  # more entries than any instance holds; past 2**31 SQL drivers fail

app = App(
    name="phlo",
    help="Phlo: a data lakehouse on Dagster, dbt and DuckLake.",
    version="0.1.0",
    suppress_keyboard_interrupt=False,  # main() reports Ctrl-C; cyclopts would exit silently
)


class UsageError(Exception):
    """Bad input from the user: reported on one line, exit code 2."""


def _err(message: str) -> None:
    from phlo_core.redact import redact

    print(f"phlo: error: {redact(message)}", file=sys.stderr)


def _settings(*, writes: bool = True) -> PhloSettings:
    """The settings, PHLO_HOME checked: writable, unless the command only reads."""
    from phlo_core.settings import SettingsError, check_home, get_settings

    try:
        settings = get_settings()
        check_home(settings, writes=writes)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    return settings


def _progress_printer(verbose: bool, days_label: str | None = None) -> ProgressCallback:
    """Progress lines on stderr. A range run materializes every asset once per day; unless
    verbose, each asset is reported once, labelled with the whole range."""
    from phlo_core.runs.progress import Progress

    started = time.perf_counter()
    seen: set[str] = set()

    def show(event: Progress) -> None:
        elapsed = f"{time.perf_counter() - started:6.1f}s"
        if event.kind == "materialized":
            label = event.partition if verbose or not days_label else days_label
            partition = f" [{label}]" if label else ""
            if verbose or event.subject not in seen:
                print(f"  {elapsed}  materialized {event.subject}{partition}", file=sys.stderr)
            seen.add(event.subject)
        elif event.kind == "step_start":
            print(f"  {elapsed}  running {event.subject}", file=sys.stderr)
        elif event.kind == "step_failure":
            print(f"  {elapsed}  FAILED {event.subject}", file=sys.stderr)
        elif event.kind == "warning":
            print(f"  {elapsed}  warning {event.subject}: {event.message}", file=sys.stderr)

    return show


def _report_outcomes(outcomes: list[RunOutcome]) -> int:
    code = 0
    for outcome in outcomes:
        status = "succeeded" if outcome.success else "FAILED"
        scope = f"for {outcome.days.label()}" if outcome.partitioned else "(rebuilt whole)"
        if outcome.skipped:
            print(f"{outcome.location}: SKIPPED: {len(outcome.assets)} asset(s) {scope}")
        else:
            print(
                f"{outcome.location}: {status}: {len(outcome.assets)} asset(s) {scope} "
                f"in {outcome.seconds:.1f}s (run {outcome.run_id})"
            )
        for asset, summary in outcome.summaries.items():
            print(f"  {asset}: {summary}")
        for error in outcome.errors:
            print(f"  error: {error}", file=sys.stderr)
        for check in outcome.failed_checks:
            about = outcome.check_descriptions.get(check)
            print(f"  failed check: {check}" + (f" ({about})" if about else ""), file=sys.stderr)
        if not outcome.success and not outcome.skipped:
            print(f"  run's log: phlo logs --run-id {outcome.run_id[:8]}", file=sys.stderr)
        if not outcome.success:
            code = EXIT_FAILED
    return code


@app.command
def materialize(
    selection: str,
    /,
    *,
    partition: Annotated[str | None, Parameter(name=["--partition", "-p"])] = None,
    verbose: Annotated[bool, Parameter(name=["--verbose", "-v"])] = False,
    allow_shrink: bool = False,
) -> int:
    """Materialize assets for a day or a range of days, in-process; runs show in Dagster's UI.

    Parameters
    ----------
    selection
        Asset names, comma-separated. `name+` adds everything downstream of it, `+name`
        everything upstream, e.g. `dlt_<source>+` (an ingestion asset and all it feeds). A
        table's name (`raw.<table>` or just `<table>`) means the asset that writes it; `phlo
        query "show all tables"` lists the tables, an unknown name lists the assets.
    partition
        A local day `YYYY-MM-DD`, or a range `YYYY-MM-DD..YYYY-MM-DD` (both ends included),
        run as one Dagster run. Needed when the selection has a daily asset; marts and
        publishing alone are rebuilt whole without it.
    verbose
        Show Dagster's own log lines and every partition's materialization.
    allow_shrink
        Let this run replace days that would lose more than PHLO_MAX_SHRINK_PCT of the rows
        they hold (a source that now answers far less). Without it such a run is stopped and
        nothing is written.
    """
    from phlo_core.calendar import PartitionError, parse_day_range
    from phlo_core.lakehouse.connect import LakehouseError
    from phlo_core.runs.engine import materialize as run_materialize
    from phlo_core.runs.engine import validate_days
    from phlo_core.runs.instance import InstanceError
    from phlo_core.runs.selection import SelectionError, check_selection
    from phlo_core.workspace import WorkspaceError

    settings = _settings()
    try:
        days = parse_day_range(partition) if partition is not None else None
        if days is not None:  # before any output; the engine checks again for its callers
            validate_days(days, settings)
        selection = check_selection(selection, settings)
        label = days.label() if days is not None else "the assets rebuilt whole"
        print(f"materializing {selection} for {label} ...", file=sys.stderr)
        outcomes = run_materialize(
            selection,
            days,
            settings,
            on_start=lambda location, assets: print(
                f"{location}: running {len(assets)} asset(s): {', '.join(assets)}", file=sys.stderr
            ),
            on_progress=_progress_printer(verbose, label),
            log_level="INFO" if verbose else "CRITICAL",
            allow_shrink=allow_shrink,
        )
    except (PartitionError, SelectionError) as exc:
        raise UsageError(str(exc)) from None
    except (WorkspaceError, LakehouseError, InstanceError) as exc:
        _err(str(exc))
        return EXIT_FAILED
    return _report_outcomes(outcomes)


backfill_app = App(
    name="backfill",
    help="Many days of a selection: in ranges, in parallel workers, resumable.",
)
app.command(backfill_app)


@backfill_app.default
def backfill(
    selection: str | None = None,
    /,
    *,
    start_date: str | None = None,
    end_date: str | None = None,
    partitions: str | None = None,
    parallel: int | None = None,
    chunk_size: int | None = None,
    dry_run: bool = False,
    missing: bool = False,
    resume: str | None = None,
    only: bool = False,
    submit: bool = False,
    allow_shrink: bool = False,
) -> int:
    """Backfill SELECTION over many days; its runs carry the backfill's id (`phlo logs
    --backfill ID`). What is done is read from Dagster's instance, so a backfill stopped in any
    way resumes where it was.

    Parameters
    ----------
    selection
        Asset names or the tables they write, comma-separated: `<table>` is the ingestion
        writing table `raw.<table>`. Each comes with everything downstream
        of it (a day backfilled is rebuilt in every layer built from it) unless --only;
        `+name` adds everything upstream.
    start_date
        First day (YYYY-MM-DD, a local day in PHLO_TIMEZONE).
    end_date
        Last day, included.
    partitions
        Explicit days instead of a range: 2024-01-01,2024-01-15.
    parallel
        Ranges running at once: this process and N-1 worker processes (default 1).
    chunk_size
        Days per range: one run per range and location, dbt once per range (default: at
        least two ranges a worker, each from 31 to 92 days).
    dry_run
        Print the plan (days, how many done, ranges, workers) and start nothing.
    missing
        Only the days not materialized yet for every selected daily asset (or failed).
    resume
        Resume a backfill: its id (or a unique prefix), or `--resume` alone for the latest
        unfinished one. Skips what is done, retries what failed; --parallel and --chunk-size
        may change.
    only
        Only the named assets, not what is downstream of them.
    submit
        Hand the backfill to Dagster's daemon instead of running it here: an asset backfill
        on the UI's backfills page, its runs made by the assets' backfill policy and started by
        the instance's run launcher (wherever that puts runs). Returns at once; `phlo backfill
        list`, `phlo status` and `--resume` work the same. Needs a running `dagster-daemon`.
    allow_shrink
        As in `phlo materialize`: let runs replace days that would lose many rows.
    """
    from phlo_core.backfill.plan import (
        default_chunk_size,
        max_parallel,
        plan_backfill,
        requested_days,
        whole_plan,
    )
    from phlo_core.backfill.records import Backfill, BackfillError, create, save
    from phlo_core.lakehouse.connect import LakehouseError
    from phlo_core.runs.instance import InstanceError, instance_for
    from phlo_core.runs.selection import SelectionError, check_selection, with_downstream
    from phlo_core.workspace import WorkspaceError

    for option, value in (("--parallel", parallel), ("--chunk-size", chunk_size)):
        if value is not None and value < 1:
            raise UsageError(f"{option} must be 1 or more")
        if value is not None and submit:
            raise UsageError(
                f"{option} does not apply with --submit: Dagster makes the runs (the assets' "
                "backfill policy) and its run launcher decides where they run"
            )
    if parallel is not None and parallel > (most := max_parallel()):
        print(
            f"phlo: --parallel {parallel} lowered to {most}: two workers per CPU core "
            f"({most // 2} here); more only wait for each other",
            file=sys.stderr,
        )
        parallel = most
    settings = _settings()
    started = time.perf_counter()
    try:
        if resume is not None:
            if selection or start_date or end_date or partitions or missing or only:
                raise UsageError(
                    "--resume takes the backfill's own selection and days: give only "
                    "--parallel or --chunk-size with it"
                )
            record = _backfill_to_resume(settings, None if resume == "latest" else resume)
            if record.submitted and (parallel is not None or chunk_size is not None):
                raise UsageError(
                    f"backfill {record.id} runs in Dagster's daemon: --parallel and --chunk-size "
                    "do not apply (Dagster makes its runs)"
                )
            if parallel is not None:
                record.parallel = parallel
            if chunk_size is not None:
                record.chunk_size = chunk_size
            plan = plan_backfill(record, settings)
        else:
            if selection is None:
                raise UsageError(
                    "name what to backfill (asset names; `name+` adds everything downstream) "
                    "or give --resume"
                )
            days = requested_days(
                settings, start_date=start_date, end_date=end_date, partitions=partitions
            )
            selection = check_selection(selection, settings)
            if not only:
                selection = with_downstream(selection)
            draft = Backfill(
                "(dry run)",
                selection,
                [d.isoformat() for d in days],
                chunk_size or default_chunk_size(len(days), parallel or 1),
                parallel or 1,
                time.time(),
                0,
                allow_shrink,
            )
            # Materialized before (at any time): what --missing skips, what a plain backfill
            # runs again. The dry run prints the plan the run itself would follow.
            missing_plan = plan_backfill(draft, settings, missing_only=True)
            plan = missing_plan if missing else whole_plan(missing_plan)
            if dry_run:
                return _print_backfill_plan(plan, skippable=missing_plan.done)
            if not plan.todo:
                print(
                    f"nothing to do: every day of {days[0]}..{days[-1]} is materialized for "
                    f"{selection} (without --missing a backfill runs them again)"
                )
                return 0
            record = create(
                settings,
                selection,
                plan.todo,
                chunk_size=draft.chunk_size,
                parallel=draft.parallel,
                allow_shrink=allow_shrink,
            )
            plan = plan_backfill(record, settings)
        if resume is not None and dry_run:
            return _print_backfill_plan(plan)
        if resume is not None:
            save(instance_for(settings), plan.backfill)  # new options kept
        if submit or plan.backfill.submitted:
            return _submit_backfill(plan, settings)
    except (BackfillError, SelectionError) as exc:
        raise UsageError(str(exc)) from None
    except (WorkspaceError, LakehouseError, InstanceError) as exc:
        _err(str(exc))
        return EXIT_FAILED
    return _run_backfill(plan, settings, started)


def _submit_backfill(plan: Plan, settings: PhloSettings) -> int:
    from phlo_core.backfill.daemon import daemon_running, submit, submitted_state
    from phlo_core.runs.instance import instance_for

    record = plan.backfill
    instance = instance_for(settings)
    state = submitted_state(instance, record)
    if state in ("requested", "canceling", "failing"):
        raise UsageError(
            f"backfill {record.id} is still {state} in Dagster's daemon: follow it with "
            "`phlo backfill list` or the UI's backfills page"
        )
    if not plan.todo:
        print(f"backfill {record.id}: every day is done")
        return 0
    submitted = submit(plan, settings)
    print(
        f"backfill {record.id}: {len(plan.todo)} day(s) handed to Dagster's daemon as asset "
        f"backfill {submitted.asset_backfill_id}; follow it with `phlo backfill list`, "
        "`phlo status` or the UI"
    )
    if submitted.left_out:
        print(
            "note: not handed over: "
            + ", ".join(submitted.left_out)
            + " (Dagster's asset backfills cannot run the assets rebuilt whole of two code "
            "locations at once; materialize those with `phlo materialize` once it is done)",
            file=sys.stderr,
        )
    if not daemon_running(instance):
        print(
            "warning: no dagster-daemon has reported to this instance lately: the backfill "
            "waits until one runs (`phlo ui` starts one)",
            file=sys.stderr,
        )
    return 0


def _backfill_to_resume(settings: PhloSettings, backfill_id: str | None) -> Backfill:
    from phlo_core.backfill.plan import plan_backfill
    from phlo_core.backfill.records import all_backfills, load, recorded
    from phlo_core.runs.instance import instance_for

    if backfill_id is not None:
        record = load(instance_for(settings), backfill_id)
        assert record is not None
        return record
    # Read without loading Dagster: "nothing to resume" answers at once.
    records = recorded(settings)
    if records is None:
        records = all_backfills(instance_for(settings))
    if not records:
        raise UsageError("nothing to resume: this instance has no backfill yet")
    for record in reversed(records):
        if not record.finished and plan_backfill(record, settings).todo:
            return record
    raise UsageError("nothing to resume: every backfill in this instance is finished")


def _print_backfill_plan(plan: Plan, skippable: int = 0) -> int:
    """The plan as the run would follow it. `skippable`: days materialized before that this
    plan runs again (a plain backfill), which --missing would skip."""
    record = plan.backfill
    workers = min(record.parallel, len(plan.ranges)) or 1
    print(f"backfill {record.selection} (dry run: nothing started)")
    print(f"  days:     {len(record.days)} ({record.days[0]}..{record.days[-1]})")
    if skippable and not plan.done:
        print(f"  done:     {skippable} materialized before, run again (--missing skips them)")
    else:
        print(f"  done:     {plan.done} already materialized" + (", skipped" if plan.done else ""))
    print(
        f"  to run:   {len(plan.todo)} day(s) in {len(plan.ranges)} range(s) of at most "
        f"{record.chunk_size} day(s), {workers} worker(s)"
    )
    for days in plan.ranges[:10]:
        print(f"    {days.label()}")
    if len(plan.ranges) > 10:
        print(f"    ... {len(plan.ranges) - 10} more")
    if plan.has_whole:
        print("  then:     the assets rebuilt whole (marts, publishing), once")
    return 0


def _run_backfill(plan: Plan, settings: PhloSettings, started: float) -> int:
    from phlo_core.backfill.records import cancel_unfinished, save
    from phlo_core.backfill.workers import execute

    record = plan.backfill
    total = len(plan.todo)
    workers = min(record.parallel, len(plan.ranges)) or 1
    print(
        f"backfill {record.id}: {record.selection}, {total} day(s) to run in "
        f"{len(plan.ranges)} range(s), {workers} worker(s); {plan.done} day(s) already done",
        file=sys.stderr,
    )
    bar = sys.stderr.isatty()
    counts = {"done": 0, "failed": 0}

    def on_range(result: RangeResult) -> None:
        n = 0 if result.whole else len(result.days)
        counts["done" if result.success else "failed"] += n
        finished = counts["done"] + counts["failed"]
        elapsed = time.perf_counter() - started
        eta = elapsed / finished * (total - finished) if finished else 0.0
        label = "assets rebuilt whole" if result.whole else result.days.label()
        state = "ok" if result.success else "FAILED"
        if bar:
            width = 30
            filled = int(width * finished / total) if total else width
            print(
                f"\r  [{'#' * filled}{'.' * (width - filled)}] {finished}/{total} days, "
                f"{counts['failed']} failed, {elapsed:.0f}s, ETA {eta:.0f}s ",
                end="",
                file=sys.stderr,
                flush=True,
            )
            if not result.success:
                print(f"\n  FAILED {label}: {'; '.join(result.errors)[:300]}", file=sys.stderr)
        else:
            print(
                f"  {elapsed:6.1f}s  {state} {label} ({result.seconds:.1f}s)  "
                f"{finished}/{total} days",
                file=sys.stderr,
            )
            for error in result.errors:
                print(f"    error: {error}", file=sys.stderr)

    try:
        from phlo_cli import server

        results = execute(plan, settings, on_range, server.worker_starter())
    except KeyboardInterrupt:
        from phlo_core.runs.instance import instance_for

        # Every worker has exited: a run still marked going has no one left to finish it.
        cancel_unfinished(instance_for(settings), record.id)
        print(
            f"\nbackfill {record.id} interrupted; resume with: phlo backfill --resume {record.id}",
            file=sys.stderr,
        )
        _exit_now(EXIT_INTERRUPTED)
    if bar:
        print(file=sys.stderr)
    failed = [r for r in results if not r.success]
    if not failed:
        from phlo_core.runs.instance import instance_for

        record.finished = True
        save(instance_for(settings), record)
    print(
        f"backfill {record.id}: {counts['done']} day(s) done, {plan.done} skipped (done before), "
        f"{counts['failed']} failed, in {time.perf_counter() - started:.1f}s"
    )
    if failed:
        print(f"resume with: phlo backfill --resume {record.id}", file=sys.stderr)
        return EXIT_FAILED
    return 0


@backfill_app.command(name="list")
def backfill_list(*, as_json: Annotated[bool, Parameter(name="--json")] = False) -> int:
    """Backfills in this instance with their progress, oldest first.

    Parameters
    ----------
    as_json
        A JSON list of {id, selection, days, first, last, done, failed, finished, created,
        dagster}: `dagster` is the status in Dagster's daemon of a backfill handed to it
        (`--submit`), else null.
    """
    from phlo_cli.render import to_table
    from phlo_core.backfill.daemon import submitted_state
    from phlo_core.backfill.plan import plan_backfill
    from phlo_core.backfill.records import all_backfills, failed_days
    from phlo_core.runs.instance import instance_for

    settings = _settings()
    instance = instance_for(settings)
    rows = []
    for record in all_backfills(instance):
        plan = plan_backfill(record, settings)
        failed = failed_days(instance, record.id) & set(plan.todo)
        rows.append(
            {
                "id": record.id,
                "selection": record.selection,
                "days": len(record.days),
                "first": record.days[0],
                "last": record.days[-1],
                "done": plan.done,
                "failed": len(failed),
                "finished": not plan.todo,
                "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(record.created)),
                # Handed to Dagster's daemon: its asset backfill's status there.
                "dagster": submitted_state(instance, record),
            }
        )
    if as_json:
        import json

        print(json.dumps(rows))
        return 0
    if not rows:
        _read_nothing(settings, "no backfill recorded", "backfill list")
        return 0
    print(
        to_table(
            ["id", "selection", "days", "done", "failed", "state", "created"],
            [
                (
                    r["id"],
                    r["selection"],
                    f"{r['first']}..{r['last']} ({r['days']})",
                    r["done"],
                    r["failed"],
                    ("finished" if r["finished"] else "unfinished")
                    + (f" (dagster: {r['dagster']})" if r["dagster"] else ""),
                    r["created"],
                )
                for r in rows
            ],
        )
    )
    return 0


@app.command
def status(
    selection: str | None = None,
    /,
    *,
    start_date: str | None = None,
    end_date: str | None = None,
    as_json: Annotated[bool, Parameter(name="--json")] = False,
) -> int:
    """Which days of each daily asset are materialized, missing, failed or running, per
    Dagster's instance: counts and a calendar strip, one line an asset.

    Parameters
    ----------
    selection
        As in `phlo materialize` (`name+` adds what is downstream); every daily asset of the
        workspace when omitted.
    start_date
        First day shown (default: PHLO_PARTITION_START).
    end_date
        Last day shown, included (default: today).
    as_json
        A JSON list, one object an asset: counts and the missing, failed and running days.
    """
    import json

    from phlo_core.calendar import DayRange, PartitionError, check_within, parse_day, today
    from phlo_core.lakehouse.connect import LakehouseError
    from phlo_core.runs.instance import InstanceError
    from phlo_core.runs.selection import SelectionError, check_selection
    from phlo_core.runs.status import status_of
    from phlo_core.workspace import WorkspaceError

    settings = _settings(writes=False)
    try:
        first = parse_day(start_date) if start_date else settings.phlo_partition_start
        last = parse_day(end_date) if end_date else today(settings.timezone)
        if last < first:
            raise UsageError(f"--end-date {last} is before --start-date {first}")
        days = DayRange(first, last + dt.timedelta(days=1))
        check_within(days, settings.phlo_partition_start, today(settings.timezone))
        if selection is not None:
            selection = check_selection(selection, settings)
        found = status_of(settings, selection, days)
    except (PartitionError, SelectionError) as exc:
        raise UsageError(str(exc)) from None
    except (WorkspaceError, InstanceError, LakehouseError) as exc:
        _err(str(exc))
        return EXIT_FAILED
    if as_json:
        print(json.dumps([asset.to_dict() for asset in found]))
        return 0
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    print(status_table(found, days, colour=colour, width=_terminal_width()))
    if not any(asset.done for asset in found):
        _read_nothing(settings, "no day is materialized", "status")
    return 0


def _terminal_width() -> int:
    import shutil

    return shutil.get_terminal_size((100, 24)).columns


@app.command
def query(
    sql: str | None = None,
    /,
    *,
    file: Annotated[Path | None, Parameter(name=["--file", "-f"])] = None,
    output_format: Annotated[Literal["table", "json", "csv"], Parameter(name="--format")] = "table",
) -> int:
    """Run a read-only SQL query against the lakehouse, in a sandbox.

    Tables are addressed by layer and name (`show all tables` lists them). Only one SELECT,
    DESCRIBE, SHOW or SUMMARIZE statement runs; anything that would write, attach, load,
    change settings or read files outside the lake is refused (exit 2). Memory and time are
    limited by PHLO_QUERY_MEMORY_LIMIT_MB and PHLO_QUERY_TIMEOUT_SECONDS.

    Parameters
    ----------
    sql
        One SQL statement, e.g. "select * from duckdb_tables()". `-` reads it from stdin.
    file
        Read the SQL from this file (`-` for stdin) instead.
    output_format
        table (aligned text), json (an array of row objects) or csv.
    """
    from phlo_cli.render import render
    from phlo_core.lakehouse.connect import LakehouseError, QueryError
    from phlo_core.lakehouse.sandbox import QueryLimitError, QueryRefusedError, run_query

    text = _sql_text(sql, file)
    settings = _settings(writes=False)
    try:
        result = run_query(text, settings)
    except QueryRefusedError as exc:
        raise UsageError(f"query refused: {exc}") from None
    except QueryError as exc:
        raise UsageError(f"query failed: {exc}") from None
    except (LakehouseError, QueryLimitError) as exc:
        _err(str(exc))
        return EXIT_FAILED
    width = _terminal_width() if sys.stdout.isatty() else None  # a file or a pipe gets it whole
    print(render(output_format, result.columns, result.rows, width))
    return 0


def status_table(found: list[AssetDays], days: DayRange, *, colour: bool, width: int) -> str:
    """One line an asset: counts, then its days as a strip fitted to the terminal."""
    from phlo_cli.render import to_table
    from phlo_core.runs.status import cells

    symbols = {"done": "#", "some": "+", "missing": ".", "failed": "x", "running": ">"}
    colours = {"done": "32", "some": "33", "missing": "2", "failed": "31", "running": "36"}
    rows = []
    name_width = max((len(a.asset) for a in found), default=5)
    strip_width = max(10, width - name_width - 36)
    for asset in found:
        counts = {state: len(d) for state, d in asset.by_state().items()}
        strip = cells(asset, strip_width)
        text = "".join(
            f"\x1b[{colours[c]}m{symbols[c]}\x1b[0m" if colour else symbols[c] for c in strip
        )
        rows.append((asset.asset, counts["done"], counts["missing"], counts["failed"], text))
    if not found:
        return "no daily-partitioned asset in the selection"
    last = days.end - dt.timedelta(days=1)
    per_cell = -(-len(days) // strip_width)
    scale = "a day a cell" if per_cell == 1 else f"{per_cell} days a cell"
    legend = (
        f"{days.start}..{last} ({len(days)} days, {scale}): # done  + partly done  . missing  "
        "x failed  > running"
    )
    return to_table(["asset", "done", "missing", "failed", "days"], rows) + "\n" + legend


def _sql_text(sql: str | None, file: Path | None) -> str:
    if (sql is None) == (file is None):
        raise UsageError("give the SQL as an argument or with --file (`-` reads stdin), not both")
    if file is not None and str(file) != "-":
        try:
            return file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise UsageError(f"cannot read SQL file {file}: {reason}") from None
    if sql == "-" or file is not None:
        return sys.stdin.read()
    return sql or ""


@app.command
def logs(
    *,
    asset: str | None = None,
    job: str | None = None,
    level: str = "DEBUG",
    since: str | None = None,
    run_id: str | None = None,
    backfill: str | None = None,
    follow: Annotated[bool, Parameter(name=["--follow", "-f"])] = False,
    full: bool = False,
    as_json: Annotated[bool, Parameter(name="--json")] = False,
    limit: int = 100,
) -> int:
    """Run logs from the Dagster instance (DAGSTER_HOME), however the runs were started.

    Entries are the lines steps logged, run starts and ends, step failures with their error,
    materializations and check results; oldest first. Filters combine, and are applied in the
    event log's own SQL.

    Parameters
    ----------
    asset
        Only entries of this asset: its materializations and checks, and the lines and
        failures of the steps that computed it.
    job
        Only runs of this job (each location has its pipeline job; the UI lists them).
    level
        This level and above: DEBUG, INFO, WARNING, ERROR, CRITICAL.
    since
        Only entries of the last 30m, 1h, 2d, 1h30m ...
    run_id
        Only this run: its id or a unique prefix of it.
    backfill
        Only runs of this backfill.
    follow
        Keep printing new entries (of runs started later too) until Ctrl-C.
    full
        Do not fit lines to the terminal; show multi-line messages and stack traces whole.
    as_json
        One JSON object a line (timestamp, level, run_id, job, step, asset, event_type,
        message, fields, stack).
    limit
        At most this many entries (the newest), before --follow goes on.
    """
    from phlo_cli.render import log_line
    from phlo_core.runlogs.model import (
        LogEntry,
        LogFilter,
        LogsError,
        NoInstanceError,
        parse_level,
        parse_since,
    )
    from phlo_core.runlogs.read import follow as follow_entries
    from phlo_core.runlogs.read import read_entries, resolve_run_id
    from phlo_core.runlogs.stores import open_logs

    if not 1 <= limit <= MAX_LOG_LIMIT:
        raise UsageError(f"--limit must be between 1 and {MAX_LOG_LIMIT:,}")
    settings = _settings(writes=False)
    try:
        threshold = parse_level(level)
        after = parse_since(since) if since is not None else None
        source = open_logs(settings)
        run_ids = [resolve_run_id(source, run_id)] if run_id is not None else None
        if asset is not None and not source.has_asset(asset):
            raise LogsError(f"no run in this instance has touched an asset named {asset!r}")
    except LogsError as exc:
        raise UsageError(str(exc)) from None
    except NoInstanceError as exc:
        _err(str(exc) + _demo_hint(settings, "logs"))
        return EXIT_FAILED
    logs_filter = LogFilter(
        run_ids=run_ids,
        job=job,
        asset=asset,
        level=threshold,
        since=after,
        backfill=backfill,
        limit=limit,
    )
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR") and not as_json
    width = None if full or not sys.stdout.isatty() else os.get_terminal_size().columns

    def show(entry: LogEntry) -> None:
        import json

        if as_json:
            print(json.dumps(entry.as_json(), default=str), flush=follow)
        else:
            print(log_line(entry, width=width, full=full, colour=colour), flush=follow)

    if follow:
        try:
            for entry in follow_entries(source, logs_filter):
                show(entry)
        except KeyboardInterrupt:
            return 0
    found = read_entries(source, logs_filter)
    for entry in found:
        show(entry)
    if not found and not as_json:
        _read_nothing(settings, "no entries match", "logs")
    return 0


def _demo_hint(settings: PhloSettings, command: str) -> str:
    """Where the demo's data is, when this home has a demo beside it: commands read PHLO_HOME
    (`.phlo` by default), and `phlo demo` writes to PHLO_HOME/demo."""
    demo = settings.home / "demo"
    if not (demo / "dagster").exists():
        return ""
    return f"; the demo's runs are in {_shown(demo)}: PHLO_HOME={_shown(demo)} phlo {command}"


def _read_nothing(settings: PhloSettings, what: str, command: str) -> None:
    """An empty answer says which home it read (and where the demo is), on stderr."""
    print(
        f"{what} in PHLO_HOME={_shown(settings.home)}{_demo_hint(settings, command)}",
        file=sys.stderr,
    )


services_app = App(
    name="services",
    help="Local PostgreSQL and S3 servers for the production profile, without Docker.",
)
app.command(services_app)


def _show_services(statuses: list[object], as_json: bool) -> None:
    from dataclasses import asdict

    from phlo_cli.render import to_table

    if as_json:
        import json

        print(json.dumps([asdict(status) for status in statuses]))  # pyright: ignore
        return
    rows = [
        (s.name, s.state, s.address or "-", "yes" if s.answers else "no", s.detail)  # pyright: ignore
        for s in statuses
    ]
    print(to_table(["service", "state", "address", "answers", "detail"], rows))


def _follow_services(settings: PhloSettings) -> None:
    """DAGSTER_HOME's dagster.yaml for the settings as they read now (the services' or not),
    so that `dagster dev` started next uses the same storage as phlo."""
    from phlo_core.runs.instance import sync_instance_config
    from phlo_core.settings import load_settings

    given = {"phlo_home": settings.phlo_home}
    if settings.dagster_home is not None:
        given["dagster_home"] = settings.dagster_home
    sync_instance_config(load_settings(**given))


@services_app.command(name="up")
def services_up(*, pg_port: int | None = None, s3_port: int | None = None) -> int:
    """Start PostgreSQL and a SeaweedFS S3 server on loopback (again: keeps them running).

    Creates the bucket `lake`, the role `phlo` and the databases for the lake's catalog,
    Dagster's storage and the published marts (and the demo's own), and writes
    PHLO_HOME/services.env: from then on every phlo command (and `dagster dev` through the
    dagster.yaml phlo writes) runs on this production profile. Data and logs stay under
    PHLO_HOME/services (as root, PostgreSQL's files are in a folder phlo makes for the
    postgres user, ~postgres/phlo/<id>: `phlo services status` shows it). Only their owner
    reaches them: PostgreSQL wants the generated password on every connection, SeaweedFS's
    internal ports this install's certificate and keys.

    Parameters
    ----------
    pg_port
        PostgreSQL's port (default: the one used before, else a free one).
    s3_port
        The S3 API's port (default: the one used before, else a free one).
    """
    from phlo_core.services.control import up
    from phlo_core.services.layout import ServiceError, ServicePortError

    for option, port in (("--pg-port", pg_port), ("--s3-port", s3_port)):
        if port is not None and not 1024 <= port <= 65535:
            raise UsageError(f"{option} must be a port from 1024 to 65535, not {port}")
    settings = _settings()
    try:
        statuses = up(settings, pg_port=pg_port, s3_port=s3_port)
    except ServicePortError as exc:
        raise UsageError(str(exc)) from None
    except ServiceError as exc:
        _err(str(exc))
        return EXIT_FAILED
    _follow_services(settings)
    _show_services(list(statuses), as_json=False)
    print(
        f"\nphlo now runs on these services (settings in {_shown(settings.home / 'services.env')}"
        "); `phlo services down` returns to the embedded default.",
        file=sys.stderr,
    )
    return 0


@services_app.command(name="down")
def services_down(*, purge: bool = False) -> int:
    """Stop the servers `phlo services up` started; their data stays for the next `up`.

    phlo commands use the embedded default (or your own settings) again.

    Parameters
    ----------
    purge
        Also delete everything `up` made: the servers' data, keys and logs, PostgreSQL's files
        wherever they live (as root, ~postgres/phlo/<id>). The lakehouse is gone with them.
    """
    from phlo_core.services.control import down
    from phlo_core.services.layout import ServiceError

    settings = _settings()
    try:
        statuses = down(settings, purge=purge)
    except ServiceError as exc:
        _err(str(exc))
        return EXIT_FAILED
    _follow_services(settings)
    _show_services(list(statuses), as_json=False)
    return 0


@services_app.command(name="status")
def services_status(*, as_json: Annotated[bool, Parameter(name="--json")] = False) -> int:
    """Each service, its address and whether it answers. Exit 1 when one set up is not running.

    Parameters
    ----------
    as_json
        A JSON list of {name, state, address, answers, detail}.
    """
    from phlo_core.services.control import status

    statuses = status(_settings(writes=False))
    _show_services(list(statuses), as_json=as_json)
    set_up = [s for s in statuses if s.state != "not set up"]
    return 0 if all(s.answers for s in set_up) else EXIT_FAILED


server_app = App(
    name="server",
    help="The warm process that runs `phlo materialize` and `phlo backfill` without their "
    "start-up cost (PHLO_SERVER=0 turns it off).",
)
app.command(server_app)


@server_app.command(name="status")
def server_status() -> int:
    """This user's phlo servers: process id, code version, memory, age and socket. Each serves
    one version of the code (any settings), and exits after PHLO_SERVER_IDLE_SECONDS (600)
    without a command."""
    from phlo_cli import server
    from phlo_cli.render import duration
    from phlo_core.private_folder import NotPrivateError

    try:
        servers = server.running()
    except NotPrivateError as exc:
        _err(f"no phlo server can run here: {exc}")
        return EXIT_FAILED
    for found in servers:
        state = "  stopping (no new commands)" if found.stopping else ""
        memory, age = found.memory_mb(), found.age_seconds()
        print(
            f"pid {found.pid}  code {found.code_version}"
            f"  {f'{memory:.0f} MB' if memory is not None else '? MB'}"
            f"  up {duration(age) if age is not None else '?'}"
            f"  {found.socket}  (log: {found.log}){state}"
        )
    if not servers:
        print("no phlo server running")
    return 0


@server_app.command(name="stop")
def server_stop() -> int:
    """Stop this user's phlo servers (commands they are running finish first), and forget the
    settings a server could not serve (its log says why), so that the next command tries again."""
    from phlo_cli import server
    from phlo_core.private_folder import NotPrivateError

    try:
        print(f"stopped {server.stop_all()} phlo server(s)")
    except NotPrivateError as exc:
        _err(f"no phlo server can run here: {exc}")
        return EXIT_FAILED
    return 0


@app.command
def instance() -> int:
    """Create the Dagster instance for the settings and print its dagster.yaml's path.

    What a deployment's `dagster-webserver`, `dagster-daemon` and code servers read
    (DAGSTER_HOME): SQLite storage under it by default, PostgreSQL when
    PHLO_DAGSTER_POSTGRES_URL is set; run monitoring; phlo's log lines captured into the event
    log. phlo rewrites the file when the settings change; a dagster.yaml of your own (without
    phlo's first line) is left as it is.
    """
    from phlo_core.runs.instance import InstanceError, instance_config, instance_for

    settings = _settings()
    try:
        instance_for(settings).dispose()
    except InstanceError as exc:
        _err(str(exc))
        return EXIT_FAILED
    config = settings.resolved_dagster_home / "dagster.yaml"
    print(config)
    if config.read_text() != instance_config(settings):
        print(f"{_shown(config)} is your own (no phlo first line): left as it is", file=sys.stderr)
    return 0


@app.command
def maintenance(*, retention_days: int | None = None) -> int:
    """Lakehouse housekeeping: expire old snapshots, delete unreferenced files, merge small ones.

    Also runs every night as the `lakehouse_maintenance` job's schedule. Safe beside running
    materializations (it waits for the lakehouse's writer lock).

    Parameters
    ----------
    retention_days
        Keep snapshots (and time travel) this many days back; default
        PHLO_SNAPSHOT_RETENTION_DAYS (7).
    """
    from phlo_core.lakehouse.connect import LakehouseError, check_catalog
    from phlo_core.lakehouse.maintenance import maintain

    settings = _settings()
    if retention_days is not None and retention_days < 0:
        raise UsageError("--retention-days must be 0 or more")
    try:
        check_catalog(settings)
        report = maintain(settings, retention_days)
    except LakehouseError as exc:
        _err(str(exc))
        return EXIT_FAILED
    print(f"maintenance: {report.summary()}")
    return 0


@app.command
def ui(*, demo: bool = False, port: int = 3000, host: str = "127.0.0.1") -> int:
    """Dagster's UI (webserver and daemon) on this home's instance and workspace, until Ctrl-C.

    Parameters
    ----------
    demo
        The demo's home (PHLO_HOME/demo), with its sample sources served, so that runs launched
        from the UI ingest sample data.
    port
        The webserver's port.
    host
        The address it listens on (loopback by default: the UI has no login).
    """
    import threading
    from contextlib import ExitStack

    from phlo_core.demo import demo_settings, sample_sources
    from phlo_core.services.layout import port_in_use
    from phlo_core.services.ui import UiError, start_ui

    if not 1024 <= port <= 65535:
        raise UsageError(f"--port must be from 1024 to 65535, not {port}")
    if port_in_use(port):
        raise UsageError(f"port {port} is in use: give another with --port")
    settings = _settings()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    with ExitStack() as stack:
        extra = stack.enter_context(sample_sources(settings)) if demo else {}
        home = demo_settings(settings) if demo else settings
        try:
            started = start_ui(home, host=host, port=port, extra_env=extra)
        except UiError as exc:
            _err(str(exc))
            return EXIT_FAILED
        stack.callback(started.stop)
        print(
            f"Dagster's UI for PHLO_HOME={_shown(home.home)}"
            + (" (SAMPLE DATA)" if demo else "")
            + f": {started.url}  starting, about 20 s; Ctrl-C stops it (logs: "
            + f"{_shown(started.logs)})",
            file=sys.stderr,
            flush=True,
        )
        ready = False
        while not stop.wait(0.5):
            if ended := started.exited():
                name, code = next(iter(ended.items()))
                _err(f"the {name} ended (exit code {code}): see {started.logs / name}.log")
                return EXIT_FAILED
            if not ready and (ready := started.answers()):
                print(f"ready: {started.url}", file=sys.stderr, flush=True)
        print("stopping the UI ...", file=sys.stderr, flush=True)
    print("UI stopped", file=sys.stderr)
    return 0


@app.command
def docs(*, serve: bool = False, port: int = 8580, host: str = "127.0.0.1") -> int:
    """dbt's documentation of every dbt project (models, columns, tests, lineage, the
    lakehouse's column types): one self-contained page per project under PHLO_HOME/docs.

    Parameters
    ----------
    serve
        Also serve them on loopback until Ctrl-C.
    port
        The port to serve on.
    host
        The address to serve on.
    """
    import threading

    from phlo_core.dbt.docs import build_docs, serve_docs
    from phlo_core.dbt.runner import DbtError
    from phlo_core.lakehouse.connect import LakehouseError

    if serve and not 1024 <= port <= 65535:
        raise UsageError(f"--port must be from 1024 to 65535, not {port}")
    settings = _settings()
    try:
        pages = build_docs(settings)
    except (DbtError, LakehouseError) as exc:
        _err(str(exc))
        return EXIT_FAILED
    for project, page in pages.items():
        print(f"{project}: {_shown(page)}")
    if not serve:
        return 0
    try:
        server = serve_docs(settings, host, port)
    except OSError as exc:
        raise UsageError(f"cannot serve on {host}:{port}: {exc.strerror}") from None
    for project, page in pages.items():
        print(f"{project}: http://{host}:{port}/{project}/{page.name}", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print("serving the docs until Ctrl-C", file=sys.stderr, flush=True)
    stop.wait()
    server.shutdown()
    return 0


@app.command
def completion(shell: Literal["bash", "zsh", "fish"] = "bash", /) -> int:
    """Print the shell completion script for phlo: `eval "$(phlo completion bash)"` in your
    ~/.bashrc (zsh and fish likewise) completes commands and options."""
    print(app.generate_completion(prog_name="phlo", shell=shell))
    return 0


sample_app = App(
    name="sample",
    help="The demo's sample sources, served over their real APIs for trying phlo on them.",
)
app.command(sample_app)


@sample_app.command(name="serve")
def sample_serve() -> int:
    """Serve every location's SAMPLE source on loopback until Ctrl-C, and print the settings
    that point phlo at them and at the demo's home: export them in another shell and run
    backfill, status, logs or the UI on the sample data (`phlo demo` made its first days)."""
    import threading

    from phlo_core.demo import sample_selections, sample_sources

    settings = _settings()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with sample_sources(settings) as environment:
        print("# SAMPLE DATA sources, until Ctrl-C. In another shell:")
        for name, value in environment.items():
            print(f"export {name}={shlex.quote(value)}")
        first = next(iter(sample_selections(settings)), "<asset>+")
        print(
            f"# then e.g.: phlo backfill {first} --start-date 2024-01-15 "
            "--end-date 2024-02-15; phlo status; phlo logs",
            flush=True,
        )
        stop.wait()
    print("sample sources stopped", file=sys.stderr)
    return 0


@app.command
def demo() -> int:
    """Run every pipeline end to end on SAMPLE data served by local, protocol-true servers.

    The sample lakehouse and Dagster instance live under PHLO_HOME/demo, apart from real data.
    """
    from phlo_cli.render import to_table
    from phlo_core.demo import run_demo

    settings = _settings()
    print("phlo demo: SAMPLE DATA served over each source's real API on loopback", file=sys.stderr)
    started = time.perf_counter()
    result = run_demo(
        settings,
        on_source=lambda location, source: print(
            f"{location}: SAMPLE DATA from {source}", file=sys.stderr
        ),
        on_start=lambda location, assets: print(
            f"{location}: materializing {len(assets)} assets ...", file=sys.stderr
        ),
        on_progress=_progress_printer(False, "all sample days"),
    )
    code = _report_outcomes(result.outcomes)
    for report in result.reports:
        print(f"\n== {report.location}: {report.title} [SAMPLE DATA] ==")
        print(to_table(report.result.columns, report.result.rows))
    home = _shown(result.settings.home)
    where = (
        f"PostgreSQL (catalog) and {result.settings.lake_data_path} (files), home {home}"
        if result.settings.on_servers
        else home
    )
    phlo = _shown(Path(sys.argv[0]).absolute()) if sys.argv[0].endswith("phlo") else "phlo"
    explore = "".join(
        f'explore it:  PHLO_HOME={home} {phlo} query "{sql}"\n' for sql in result.explore_sql
    )
    published = result.settings.phlo_publish_postgres_url
    if published is not None and not code:
        from urllib.parse import urlsplit

        target = urlsplit(published.get_secret_value())  # where, never who or the password
        where = f"{target.hostname}:{target.port or 5432}{target.path}"
        print(f"\nmarts published to PostgreSQL at {where} (schema marts)")
    print(
        f"\ndemo finished in {time.perf_counter() - started:.1f}s; sample lakehouse in {where}\n"
        f"{explore}"
        f"go on with the sample data (backfill, status, logs): {phlo} sample serve\n"
        f"browse runs in Dagster's UI: {phlo} ui --demo"
    )
    return code


def _shown(path: Path) -> str:
    """A path as short as it can be shown: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _sql_as_positional(tokens: list[str]) -> list[str]:
    """SQL that starts with a comment (`-- report ...`) looks like an option to the parser:
    pass such a token after `--`, where only positionals go."""
    if not tokens or tokens[0] != "query" or "--" in tokens:
        return tokens
    kept: list[str] = []
    sql: list[str] = []
    for token in tokens:
        if token == "-" and kept and kept[-1] in ("-f", "--file"):
            kept[-1] = "--file=-"
        elif token == "-" or (token.startswith("-") and any(c.isspace() for c in token)):
            sql.append(token)
        else:
            kept.append(token)
    return [*kept, "--", *sql] if sql else kept


def _resume_alone(tokens: list[str]) -> list[str]:
    """`phlo backfill --resume` with no id means the latest unfinished backfill."""
    if not tokens or tokens[0] != "backfill" or "--resume" not in tokens:
        return tokens
    at = tokens.index("--resume")
    if at + 1 == len(tokens) or tokens[at + 1].startswith("-"):
        return [*tokens[: at + 1], "latest", *tokens[at + 1 :]]
    return tokens


def _exit_now(code: int) -> NoReturn:
    """Exit; skip interpreter teardown if an interrupt left a thread behind. A Python thread
    that returns from DuckDB while Python finalizes makes C++ abort the process ("terminate
    called without an active exception", exit 134)."""
    import threading

    sys.stdout.flush()
    sys.stderr.flush()
    if threading.active_count() > 1:
        os._exit(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    if argv is None and sys.argv[1:2] and sys.argv[1] in SERVED:
        from phlo_cli import server  # only here: the other commands start without it

        if server.wanted(sys.argv[1:]):
            served = server.run_through(sys.argv[1:])
            if served is not None:
                sys.exit(served)
    tokens = _resume_alone(_sql_as_positional(sys.argv[1:] if argv is None else argv))
    try:
        code = app(tokens, exit_on_error=False, print_error=False, result_action="return_value")
        sys.stdout.flush()  # here, not at exit: a reader gone before the last buffer is caught
    except CycloptsError as exc:
        message = " ".join(str(exc).split())
        _err(f"{message} (see `phlo --help`)")
        sys.exit(EXIT_USAGE)
    except UsageError as exc:
        _err(str(exc))
        sys.exit(EXIT_USAGE)
    except BrokenPipeError:
        # The reader went away (`phlo logs | head`): stop quietly, as Unix tools do. Python
        # would flush stdout again at exit and complain: point it at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_BROKEN_PIPE)
    except KeyboardInterrupt as exc:
        run_id = getattr(exc, "run_id", None)
        _err(f"interrupted; run {run_id} canceled" if run_id else "interrupted")
        _exit_now(EXIT_INTERRUPTED)
    except Exception as exc:
        from phlo_core.redact import redact
        from phlo_core.settings import SettingsError, get_settings

        if isinstance(exc, SettingsError):
            _err(str(exc))
            sys.exit(EXIT_USAGE)
        if get_settings().phlo_debug:
            raise
        first = redact((str(exc).strip().splitlines() or [""])[0])
        _err(f"{type(exc).__name__}: {first} (PHLO_DEBUG=1 shows the traceback)")
        sys.exit(EXIT_FAILED)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
