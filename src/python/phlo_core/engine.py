"""The run engine: resolve an asset selection, run it in-process against the Dagster instance.

Runs are in-process (no subprocess per step: the multiprocess executor costs 8-11 s a run on two
cores) and recorded in the instance under DAGSTER_HOME, so they show in Dagster's UI. A range
of days is ONE run (Dagster's partition-range tags): every asset is built once for the window.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from phlo_core.calendar import DayRange, check_within, today
from phlo_core.locks import file_lock, write_atomically
from phlo_core.orphans import fail_orphaned_runs, process_tags
from phlo_core.settings import PhloSettings, use_settings
from phlo_core.shrink import ALLOW_SHRINK_TAG
from phlo_core.workspace import (
    REPO_ROOT,
    LocationRef,
    load_definitions,
    location_refs,
    preflight,
)

if TYPE_CHECKING:
    from dagster import AssetKey, DagsterInstance, Definitions
    from dagster._core.execution.plan.objects import StepFailureData


# Metadata key an asset may set to a one-line, human summary of what it did; `phlo` prints it.
SUMMARY_KEY = "summary"


class SelectionError(ValueError):
    """The asset selection names an asset no code location has; the message lists the known."""


class RunInterruptedError(KeyboardInterrupt):
    """Ctrl-C (SIGINT or SIGTERM) stopped a run; the instance records it as CANCELED."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id


CANCEL_MESSAGE = "interrupted (Ctrl-C, SIGINT or SIGTERM): canceled"


def _by_interrupt(failure: StepFailureData) -> bool:
    """Whether Ctrl-C failed the step: Dagster saw the interrupt itself, or code in the step
    wrapped it (DuckDB turns it into "Query interrupted", phlo into LakehouseError)."""
    from dagster._core.execution.plan.objects import ErrorSource

    if failure.error_source == ErrorSource.INTERRUPT:
        return True
    pending, seen = [failure.error], 0
    while pending and seen < 50:
        error = pending.pop()
        seen += 1
        if error is not None:
            if error.cls_name in ("KeyboardInterrupt", "DagsterExecutionInterruptedError"):
                return True
            pending += [error.cause, error.context]
    return False


def _cancel_on_interrupt(instance: DagsterInstance, run_id: str) -> Callable[[object], None]:
    """An event listener (called synchronously as each event is stored): when Ctrl-C fails a
    step, mark the run CANCELING before Dagster finishes it, so that Dagster ends it CANCELED
    instead of FAILURE ("interrupted unexpectedly")."""
    from dagster import DagsterRunStatus

    def listen(entry: object) -> None:
        event = getattr(entry, "dagster_event", None)
        if event is None or not event.is_step_failure or event.step_failure_data is None:
            return
        if _by_interrupt(event.step_failure_data):
            run = instance.get_run_by_id(run_id)
            if run is not None and run.status == DagsterRunStatus.STARTED:
                instance.report_run_canceling(run, message=CANCEL_MESSAGE)

    return listen


def _mark_canceled(instance: DagsterInstance, run_id: str) -> None:
    """For an interrupt Dagster never saw (before or after its own interrupt handling)."""
    run = instance.get_run_by_id(run_id)
    if run is not None and not run.is_finished:
        instance.report_run_canceled(run, message=CANCEL_MESSAGE)


@dataclass
class LocationPlan:
    location: LocationRef
    definitions: Definitions
    keys: list[AssetKey]
    after: set[str] = field(default_factory=set)  # locations whose selected assets it reads


@dataclass
class RunOutcome:
    location: str
    run_id: str
    success: bool
    assets: list[str]
    days: DayRange
    seconds: float
    log_path: Path | None = None
    errors: list[str] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)
    summaries: dict[str, str] = field(default_factory=dict)
    skipped: bool = False  # not run, because a location it reads from failed
    partitioned: bool = True  # False: tables rebuilt whole, the days did not apply


def _failure_message(failure: StepFailureData) -> str:
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


def run_log_path(instance: DagsterInstance, run_id: str) -> Path:
    """Where a run's stdout (dbt's console output, for one) is kept."""
    return Path(instance.root_directory) / "phlo_run_logs" / f"{run_id}.log"


def instance_for(settings: PhloSettings) -> DagsterInstance:
    """The Dagster instance in DAGSTER_HOME, created on first use. Creation is serialized:
    two processes creating SQLite storage at once stamp its schema twice, which breaks every
    later run on that instance. Runs whose process is gone are marked failed here."""
    from dagster import DagsterInstance

    home = settings.resolved_dagster_home
    with file_lock(home / ".phlo-instance.lock"):
        config = home / "dagster.yaml"
        if not config.exists():
            template = REPO_ROOT / "infra" / "dagster" / "dagster.yaml"
            write_atomically(config, template.read_text())
        instance = DagsterInstance.from_config(str(home))
        instance.get_run_records(limit=1)  # opens (and creates) the storage under the lock
    fail_orphaned_runs(instance)
    return instance


def parse_selection(selection: str) -> list[tuple[str, bool, bool]]:
    """(name, with upstream, with downstream) for each comma-separated token."""
    tokens = []
    for raw in selection.split(","):
        token = raw.strip()
        if not token:
            continue
        upstream, downstream = token.startswith("+"), token.endswith("+")
        name = token.strip("+").strip()
        if not name:
            raise SelectionError(f"{raw.strip()!r} names no asset")
        tokens.append((name, upstream, downstream))
    if not tokens:
        raise SelectionError("the selection is empty: name one or more assets, e.g. 'stg_orders+'")
    return tokens


def _asset_owners(plans: list[LocationPlan]) -> dict[str, list[LocationPlan]]:
    """Which locations define (materialize) each asset name."""
    owners: dict[str, list[LocationPlan]] = {}
    for plan in plans:
        graph = plan.definitions.resolve_asset_graph()
        for key in graph.materializable_asset_keys:
            owners.setdefault(key.to_user_string(), []).append(plan)
    return owners


def _in_dependency_order(plans: list[LocationPlan]) -> list[LocationPlan]:
    """Locations whose assets read another location's assets run after it (workspace order
    otherwise)."""
    produced = {key: plan for plan in plans for key in plan.keys}
    ordered: list[LocationPlan] = []

    def visit(plan: LocationPlan, path: tuple[str, ...]) -> None:
        if plan in ordered or plan.location.name in path:
            return
        graph = plan.definitions.resolve_asset_graph()
        for key in plan.keys:
            for parent in graph.get(key).parent_keys:
                upstream = produced.get(parent)
                if upstream is not None and upstream is not plan:
                    plan.after.add(upstream.location.name)
                    visit(upstream, (*path, plan.location.name))
        ordered.append(plan)

    for plan in plans:
        visit(plan, ())
    return ordered


def _add_keys(plan: LocationPlan, keys: Iterable[AssetKey]) -> set[AssetKey]:
    """Add the materializable ones among `keys` to the plan; the ones that were new."""
    graph = plan.definitions.resolve_asset_graph()
    new = {key for key in keys if key not in plan.keys and graph.get(key).is_materializable}
    plan.keys.extend(sorted(new, key=lambda key: key.to_user_string()))
    return new


def _add_readers(plans: list[LocationPlan], owner: LocationPlan, keys: set[AssetKey]) -> None:
    """Everything downstream of `keys` in the other locations that read them (and in those
    that read what those build, and so on)."""
    from dagster import AssetSelection

    pending = keys
    while pending:
        found: set[AssetKey] = set()
        for plan in plans:
            if plan is owner:
                continue
            graph = plan.definitions.resolve_asset_graph()
            seeds = [key for key in pending if graph.has(key)]
            if seeds:
                found |= _add_keys(plan, AssetSelection.assets(*seeds).downstream().resolve(graph))
        pending = found


def plan_selection(selection: str, settings: PhloSettings) -> list[LocationPlan]:
    """Which assets of which location a selection means: `a,b` names, `a+` a and everything
    downstream (in any location that reads it), `+a` a and everything upstream in its own
    location. A name defined by two locations is an error."""
    from dagster import AssetKey, AssetSelection

    tokens = parse_selection(selection)
    use_settings(settings)
    plans = [LocationPlan(ref, load_definitions(ref), []) for ref in location_refs(settings)]
    owners = _asset_owners(plans)
    for name, upstream, downstream in tokens:
        if name not in owners:
            listing = ", ".join(sorted(owners))
            raise SelectionError(f"unknown asset {name!r}; known assets: {listing}")
        if len(owners[name]) > 1:
            where = " and ".join(plan.location.name for plan in owners[name])
            raise SelectionError(
                f"asset {name!r} is defined in two code locations ({where}): rename one of "
                "them; an asset name must be unique across the workspace"
            )
        owner = owners[name][0]
        graph = owner.definitions.resolve_asset_graph()
        chosen = AssetSelection.assets(AssetKey.from_user_string(name))
        if downstream:
            chosen = chosen.downstream()
        if upstream:
            chosen = chosen.upstream()
        resolved = chosen.resolve(graph)
        _add_keys(owner, resolved)
        if downstream:
            _add_readers(plans, owner, set(resolved))
    return _in_dependency_order([plan for plan in plans if plan.keys])


@dataclass(frozen=True)
class Progress:
    """Something that happened in a run: a step started or failed, an asset materialized."""

    kind: str  # step_start | materialized | step_failure | step_interrupted
    subject: str
    partition: str | None = None


ProgressCallback = Callable[[Progress], None]


class _RunWatcher(threading.Thread):
    """Polls the run's event log while the run executes in the main thread."""

    def __init__(self, instance: DagsterInstance, run_id: str, callback: ProgressCallback) -> None:
        super().__init__(daemon=True)
        self.instance, self.run_id, self.callback = instance, run_id, callback
        self.finished = threading.Event()
        self.cursor: str | None = None

    def poll(self) -> None:
        try:
            connection = self.instance.get_records_for_run(self.run_id, cursor=self.cursor)
        except Exception:  # the run may not be stored yet
            return
        self.cursor = connection.cursor
        for record in connection.records:
            event = record.event_log_entry.dagster_event
            if event is None:
                continue
            kind = event.event_type_value
            if kind == "STEP_START":
                self.callback(Progress("step_start", event.step_key or "?"))
            elif kind == "ASSET_MATERIALIZATION" and event.asset_key is not None:
                self.callback(
                    Progress("materialized", event.asset_key.to_user_string(), event.partition)
                )
            elif kind == "STEP_FAILURE":
                failure = event.step_failure_data
                interrupted = failure is not None and _by_interrupt(failure)
                kind = "step_interrupted" if interrupted else "step_failure"
                self.callback(Progress(kind, event.step_key or "?"))

    def run(self) -> None:
        while not self.finished.wait(0.3):
            self.poll()
        self.poll()


def materialize(
    selection: str,
    days: DayRange,
    settings: PhloSettings,
    *,
    on_start: Callable[[str, list[str]], None] | None = None,
    on_progress: ProgressCallback | None = None,
    log_level: str = "WARNING",
    echo_output: bool = False,
    allow_shrink: bool = False,
) -> list[RunOutcome]:
    """Materialize the selection for the days, one in-process run per code location.

    `allow_shrink` lets this run replace days with far fewer rows than they hold (the run is
    tagged, so the UI shows it was forced).
    """
    validate_days(days, settings)
    plans = plan_selection(selection, settings)
    for plan in plans:
        preflight(plan.location, settings, [k.to_user_string() for k in plan.keys])
    instance = instance_for(settings)
    extra_tags = {**process_tags(), **({ALLOW_SHRINK_TAG: "true"} if allow_shrink else {})}
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
        outcomes.append(
            _run(plan, names, days, instance, on_progress, log_level, echo_output, extra_tags)
        )
    return outcomes


def _run(
    plan: LocationPlan,
    names: list[str],
    days: DayRange,
    instance: DagsterInstance,
    on_progress: ProgressCallback | None,
    log_level: str,
    echo_output: bool,
    extra_tags: dict[str, str],
) -> RunOutcome:
    from dagster import DagsterRunStatus

    job = plan.definitions.resolve_implicit_global_asset_job_def()
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
    watcher = _RunWatcher(instance, run_id, on_progress) if on_progress else None
    if watcher:
        watcher.start()
    log_path = run_log_path(instance, run_id)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    instance.add_event_listener(run_id, _cancel_on_interrupt(instance, run_id))
    # Tools inside the run (dbt) write to stdout; keep it in the run's log file, not the terminal.
    try:
        with contextlib.ExitStack() as stack:
            if not echo_output:
                log = stack.enter_context(log_path.open("w"))
                stack.enter_context(contextlib.redirect_stdout(log))
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
        _mark_canceled(instance, run_id)
        raise RunInterruptedError(run_id) from None
    finally:
        if watcher:
            watcher.finished.set()
            watcher.join()
    run = instance.get_run_by_id(run_id)
    if run is not None and run.status == DagsterRunStatus.CANCELED:
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
            errors.append(f"{event.step_key}: {_failure_message(event.step_failure_data)}")
        evaluation = event.event_specific_data
        if event.event_type_value == "ASSET_CHECK_EVALUATION" and not getattr(
            evaluation, "passed", True
        ):
            key = getattr(evaluation, "asset_check_key", None)
            if key is not None:
                failed_checks.append(f"{key.asset_key.to_user_string()}:{key.name}")
    return RunOutcome(
        log_path=log_path,
        location=plan.location.name,
        run_id=result.run_id,
        success=result.success,
        assets=names,
        days=days,
        seconds=time.perf_counter() - started,
        errors=errors,
        failed_checks=failed_checks,
        summaries=summaries,
        partitioned=partitioned,
    )
