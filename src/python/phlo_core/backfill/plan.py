"""What is left of a backfill: its days not yet done (by the instance), in ranges of
consecutive days, how many workers may run them, and the days a command asks for."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from phlo_core.backfill.records import Backfill, BackfillError, daily_keys, materialized_days
from phlo_core.calendar import DayRange, PartitionError, check_within, parse_day, today
from phlo_core.settings import PhloSettings

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
    from phlo_core.lakehouse.connect import lakehouse_created
    from phlo_core.runs.engine import only_part
    from phlo_core.runs.instance import instance_for
    from phlo_core.runs.selection import plan_selection
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


def plan_request(
    settings: PhloSettings,
    selection: str,
    days: list[dt.date],
    *,
    chunk_size: int | None,
    parallel: int | None,
    allow_shrink: bool,
    missing: bool,
) -> tuple[Plan, int]:
    """What a new backfill of `selection` over `days` runs, as its dry run shows it and as the
    run itself follows it: with `missing`, only the days not materialized (at any time) for
    every selected daily asset; without, every day. Also how many days were materialized
    before (what --missing would skip). Nothing is recorded."""
    draft = Backfill(
        "(dry run)",
        selection,
        [day.isoformat() for day in days],
        chunk_size or default_chunk_size(len(days), parallel or 1),
        parallel or 1,
        time.time(),
        0,
        allow_shrink,
    )
    missing_plan = plan_backfill(draft, settings, missing_only=True)
    return (missing_plan if missing else whole_plan(missing_plan)), missing_plan.done


def to_resume(settings: PhloSettings, backfill_id: str | None) -> Backfill:
    """The backfill `--resume` means: the one with this id (or unique prefix), or, for None,
    the latest with days left to run. BackfillError when there is none."""
    from phlo_core.backfill.records import all_backfills, load, recorded
    from phlo_core.runs.instance import instance_for

    if backfill_id is not None:
        record = load(instance_for(settings), backfill_id)
        assert record is not None  # load raises for an unknown id
        return record
    # Read without loading Dagster: "nothing to resume" answers at once.
    records = recorded(settings)
    if records is None:
        records = all_backfills(instance_for(settings))
    if not records:
        raise BackfillError("nothing to resume: this instance has no backfill yet")
    for record in reversed(records):
        if not record.finished and plan_backfill(record, settings).todo:
            return record
    raise BackfillError("nothing to resume: every backfill in this instance is finished")
