"""`phlo backfill` and `phlo backfill list`: many days of a selection, resumable, in workers
or handed to Dagster's daemon."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Annotated

from cyclopts import App, Parameter

from phlo_cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    UsageError,
    command_settings,
    err,
    exit_now,
    read_nothing,
)

if TYPE_CHECKING:  # for annotations only: these modules load inside the commands
    from phlo_core.backfill.plan import Plan
    from phlo_core.backfill.workers import RangeResult
    from phlo_core.settings import PhloSettings


backfill_app = App(
    name="backfill",
    help="Many days of a selection: in ranges, in parallel workers, resumable.",
)


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
        max_parallel,
        plan_backfill,
        plan_request,
        requested_days,
        to_resume,
    )
    from phlo_core.backfill.records import BackfillError, create, save
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
    settings = command_settings()
    started = time.perf_counter()
    try:
        if resume is not None:
            if selection or start_date or end_date or partitions or missing or only:
                raise UsageError(
                    "--resume takes the backfill's own selection and days: give only "
                    "--parallel or --chunk-size with it"
                )
            record = to_resume(settings, None if resume == "latest" else resume)
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
            plan, skippable = plan_request(
                settings,
                selection,
                days,
                chunk_size=chunk_size,
                parallel=parallel,
                allow_shrink=allow_shrink,
                missing=missing,
            )
            if dry_run:
                return _print_backfill_plan(plan, skippable=skippable)
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
                chunk_size=plan.backfill.chunk_size,
                parallel=plan.backfill.parallel,
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
        err(str(exc))
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
        exit_now(EXIT_INTERRUPTED)
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

    settings = command_settings()
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
        read_nothing(settings, "no backfill recorded", "backfill list")
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
