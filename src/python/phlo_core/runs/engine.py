"""The run engine: run a selection in-process against the Dagster instance, one run per code
location, and report what each run did.

Runs are in-process (no subprocess per step: the multiprocess executor costs 8-11 s a run on two
cores) and recorded in the instance under DAGSTER_HOME, so they show in Dagster's UI. A range
of days is ONE run (Dagster's partition-range tags): every asset is built once for the window.
What a selection means is `phlo_core.runs.selection`; the instance `phlo_core.runs.instance`;
following a run and Ctrl-C `phlo_core.runs.progress`.
"""

from __future__ import annotations

import datetime as dt
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from phlo_core.calendar import DayRange, PartitionError, check_within, today
from phlo_core.lakehouse.connect import lakehouse, refuse_orphaned_data
from phlo_core.lakehouse.shrink import ALLOW_SHRINK_TAG
from phlo_core.resources import run_settings
from phlo_core.runs.instance import check_dagster_postgres, instance_for
from phlo_core.runs.orphans import process_tags
from phlo_core.runs.progress import (
    ProgressCallback,
    RunInterruptedError,
    cancel_on_interrupt,
    mark_canceled,
    progress_listener,
    signals_noted,
)
from phlo_core.runs.selection import LocationPlan, plan_selection
from phlo_core.settings import PhloSettings
from phlo_core.workspace import preflight

if TYPE_CHECKING:
    from dagster import DagsterInstance, JobDefinition
    from dagster._core.execution.plan.objects import StepFailureData


# Metadata key an asset may set to a one-line, human summary of what it did; `phlo` prints it.
SUMMARY_KEY = "summary"


@dataclass
class RunOutcome:
    location: str
    run_id: str
    success: bool
    assets: list[str]
    days: DayRange
    seconds: float
    errors: list[str] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)
    check_descriptions: dict[str, str] = field(default_factory=dict)  # of the failed checks
    summaries: dict[str, str] = field(default_factory=dict)
    skipped: bool = False  # not run, because a location it reads from failed
    partitioned: bool = True  # False: tables rebuilt whole, the days did not apply


def failure_message(failure: StepFailureData) -> str:
    """The root cause's first line, without Dagster's wrapping and module paths."""
    user = failure.user_failure_data
    if user is not None and user.description:
        return user.description.strip().splitlines()[0]
    error = failure.error
    while error is not None and error.cause is not None:
        error = error.cause
    if error is None:
        return "step failed"
    lines = error.message.strip().splitlines() or [error.cls_name or "error"]
    kind, _, text = lines[0].partition(": ")
    return text if text and "." in kind and " " not in kind else lines[0]


def validate_days(days: DayRange, settings: PhloSettings) -> None:
    check_within(days, settings.phlo_partition_start, today(settings.timezone))


def materialize(
    selection: str,
    days: DayRange | None,
    settings: PhloSettings,
    *,
    on_start: Callable[[str, list[str]], None] | None = None,
    on_progress: ProgressCallback | None = None,
    log_level: str = "WARNING",
    allow_shrink: bool = False,
    extra_tags: dict[str, str] | None = None,
    part: Literal["all", "daily", "whole"] = "all",
) -> list[RunOutcome]:
    """Materialize the selection for the days, one in-process run per code location.

    `allow_shrink` lets this run replace days with far fewer rows than they hold (the run is
    tagged, so the UI shows it was forced). `extra_tags` go on every run. `part` keeps only the
    daily-partitioned assets or only those rebuilt whole (a backfill runs its ranges with the
    first and the second once, at the end). `days` None: the selection must have no daily
    asset (marts, publishing are rebuilt whole), else a PartitionError names them.
    """
    if days is not None:
        validate_days(days, settings)
    if settings.on_servers:
        # Servers that cannot be reached (a catalog server down, wrong object-store keys, a
        # missing bucket) are one error before anything else (loading the locations takes
        # seconds), not a failed step in each location. Both checks connect before they
        # write anything.
        check_dagster_postgres(settings)
        with lakehouse(settings):
            pass
    else:
        refuse_orphaned_data(settings)  # a lost catalog is one error, not a failed step
    plans = without_idle(plan_selection(selection, settings), settings)
    if part != "all":
        plans = only_part(plans, daily=part == "daily")
    if days is None:
        daily = sorted(k.to_user_string() for p in only_part(plans, daily=True) for k in p.keys)
        if daily:
            raise PartitionError(
                f"{', '.join(daily)} {'is' if len(daily) == 1 else 'are'} daily-partitioned: "
                "give --partition YYYY-MM-DD (or a range)"
            )
        day = today(settings.timezone)  # not used: nothing in the plans is partitioned
        days = DayRange(day, day + dt.timedelta(days=1))
    for plan in plans:
        preflight(plan.location, settings, [k.to_user_string() for k in plan.keys])
    instance = instance_for(settings)
    run_tags = {
        **process_tags(),
        **({ALLOW_SHRINK_TAG: "true"} if allow_shrink else {}),
        **(extra_tags or {}),
    }
    try:
        return _run_plans(
            plans, days, settings, instance, on_start, on_progress, log_level, run_tags
        )
    finally:
        # Its storages keep connections open (pooled); a backfill makes one instance a range.
        instance.dispose()


def _run_plans(
    plans: list[LocationPlan],
    days: DayRange,
    settings: PhloSettings,
    instance: DagsterInstance,
    on_start: Callable[[str, list[str]], None] | None,
    on_progress: ProgressCallback | None,
    log_level: str,
    run_tags: dict[str, str],
) -> list[RunOutcome]:
    outcomes: list[RunOutcome] = []
    for plan in plans:
        names = sorted(k.to_user_string() for k in plan.keys)
        failed = sorted(o.location for o in outcomes if not o.success and o.location in plan.after)
        if failed:
            # Its inputs were not rebuilt: running it would publish stale or partial data.
            outcomes.append(
                RunOutcome(
                    plan.location.name,
                    "",
                    False,
                    names,
                    days,
                    0.0,
                    errors=[f"not run: it reads assets of {', '.join(failed)}, which failed"],
                    skipped=True,
                )
            )
            continue
        if on_start:
            on_start(plan.location.name, names)
        with run_settings(settings):  # what the run's resources serve
            outcomes.append(_run(plan, names, days, instance, on_progress, log_level, run_tags))
    return outcomes


def without_idle(plans: list[LocationPlan], settings: PhloSettings) -> list[LocationPlan]:
    """The plans less those of locations whose every asset would do nothing for want of what
    it needs (`phlo_core.needs`: the catalog asset in a home without a catalog), which would
    cost a run each; all of them when that leaves nothing (the run then says why)."""
    from phlo_core.needs import NEEDS_TAG, needs_met

    def idle(plan: LocationPlan) -> bool:
        graph = plan.definitions.resolve_asset_graph()
        needs = [graph.get(key).tags.get(NEEDS_TAG) for key in plan.keys]
        return all(need and not needs_met(settings, need) for need in needs)

    kept = [plan for plan in plans if not idle(plan)]
    return kept or plans


def only_part(plans: list[LocationPlan], *, daily: bool) -> list[LocationPlan]:
    """The plans with only their daily-partitioned assets (or only the others); plans left
    empty are dropped."""
    kept = []
    for plan in plans:
        graph = plan.definitions.resolve_asset_graph()
        keys = [key for key in plan.keys if (graph.get(key).partitions_def is not None) == daily]
        if keys:
            kept.append(LocationPlan(plan.location, plan.definitions, keys, plan.after))
    return kept


def _job_for(plan: LocationPlan) -> JobDefinition:
    """The location's own job that covers the selection (its daily pipeline, say), so that the
    run carries that job's name in the UI, in schedules' history and for `phlo logs --job`;
    Dagster's implicit asset job when none does."""
    wanted = set(plan.keys)
    covering = [
        job
        for job in plan.definitions.resolve_all_job_defs()
        if not job.name.startswith("__") and wanted <= set(job.asset_layer.selected_asset_keys)
    ]
    if covering:
        return min(covering, key=lambda job: (len(job.asset_layer.selected_asset_keys), job.name))
    return plan.definitions.resolve_implicit_global_asset_job_def()


def _run(
    plan: LocationPlan,
    names: list[str],
    days: DayRange,
    instance: DagsterInstance,
    on_progress: ProgressCallback | None,
    log_level: str,
    extra_tags: dict[str, str],
) -> RunOutcome:
    from dagster import DagsterRunStatus

    job = _job_for(plan)
    last = days.end - dt.timedelta(days=1)
    tags = {
        "phlo/selection": ",".join(names),
        "phlo/location": plan.location.name,
        **extra_tags,
    }
    graph = plan.definitions.resolve_asset_graph()
    partitioned = any(graph.get(key).partitions_def is not None for key in plan.keys)
    partition_key = None
    if not partitioned:
        pass  # tables rebuilt whole: the days do not apply
    elif len(days) == 1:
        partition_key = days.start.isoformat()
    else:
        tags["dagster/asset_partition_range_start"] = days.start.isoformat()
        tags["dagster/asset_partition_range_end"] = last.isoformat()
    started = time.perf_counter()
    run_id = str(uuid.uuid4())
    if on_progress:
        instance.add_event_listener(run_id, progress_listener(on_progress))
    instance.add_event_listener(run_id, cancel_on_interrupt(instance, run_id))
    # What steps print (dbt, with --quiet, prints little) goes to Dagster's compute logs, as
    # for runs launched from the UI; phlo's own lines are in the event log (`phlo logs`).
    try:
        with signals_noted() as received:
            result = job.execute_in_process(
                run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
                instance=instance,
                partition_key=partition_key,
                asset_selection=plan.keys,
                tags=tags,
                raise_on_error=False,
                run_id=run_id,
            )
    except KeyboardInterrupt:
        mark_canceled(instance, run_id)
        raise RunInterruptedError(run_id) from None
    run = instance.get_run_by_id(run_id)
    if run is not None and run.status == DagsterRunStatus.CANCELED:
        raise RunInterruptedError(run_id)
    if received & {signal.SIGINT, signal.SIGTERM}:
        # Ctrl-C that Dagster turned into a failed step, or took between steps: the command
        # stops here (a backfill worker would otherwise start its next range).
        mark_canceled(instance, run_id)
        raise RunInterruptedError(run_id)
    errors, failed_checks = [], []
    summaries: dict[str, str] = {}
    for event in result.all_events:
        if event.is_step_materialization and event.asset_key is not None:
            metadata = event.step_materialization_data.materialization.metadata
            summary = metadata.get(SUMMARY_KEY)
            if summary is not None:
                summaries[event.asset_key.to_user_string()] = str(
                    getattr(summary, "value", summary)
                )
        if event.is_step_failure and event.step_failure_data is not None:
            errors.append(f"{event.step_key}: {failure_message(event.step_failure_data)}")
        evaluation = event.event_specific_data
        if event.event_type_value == "ASSET_CHECK_EVALUATION" and not getattr(
            evaluation, "passed", True
        ):
            key = getattr(evaluation, "asset_check_key", None)
            if key is not None:
                failed_checks.append(f"{key.asset_key.to_user_string()}:{key.name}")
    return RunOutcome(
        location=plan.location.name,
        run_id=result.run_id,
        success=result.success,
        assets=names,
        days=days,
        seconds=time.perf_counter() - started,
        errors=errors,
        failed_checks=failed_checks,
        check_descriptions={
            name: spec.description
            for assets in graph.assets_defs
            for spec in assets.check_specs
            if spec.description
            and (name := f"{spec.asset_key.to_user_string()}:{spec.name}") in failed_checks
        },
        summaries=summaries,
        partitioned=partitioned,
    )
