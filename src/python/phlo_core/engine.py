"""The run engine: resolve an asset selection, run it in-process against the Dagster instance.

Runs are in-process (no subprocess per step: the multiprocess executor costs 8-11 s a run on two
cores) and recorded in the instance under DAGSTER_HOME, so they show in Dagster's UI. A range
of days is ONE run (Dagster's partition-range tags): every asset is built once for the window.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from phlo_core.calendar import DayRange, check_within, today
from phlo_core.settings import PhloSettings, use_settings
from phlo_core.workspace import REPO_ROOT, LocationRef, load_definitions, location_refs

if TYPE_CHECKING:
    from dagster import AssetKey, DagsterInstance, Definitions


class SelectionError(ValueError):
    """The asset selection names an asset no code location has; the message lists the known."""


@dataclass
class LocationPlan:
    location: LocationRef
    definitions: Definitions
    keys: list[AssetKey]


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


def partition_bounds(settings: PhloSettings) -> tuple[DayRange, str]:
    last = today(settings.timezone)
    return DayRange(settings.phlo_partition_start, last), last.isoformat()


def validate_days(days: DayRange, settings: PhloSettings) -> None:
    check_within(days, settings.phlo_partition_start, today(settings.timezone))


def instance_for(settings: PhloSettings) -> DagsterInstance:
    from dagster import DagsterInstance

    home = settings.resolved_dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        shutil.copyfile(REPO_ROOT / "infra" / "dagster" / "dagster.yaml", config)
    return DagsterInstance.from_config(str(home))


def _parse_tokens(selection: str) -> list[tuple[str, bool, bool]]:
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
        raise SelectionError("the selection is empty: name one or more assets, e.g. 'dlt_glucose_entries+'")
    return tokens


def plan_selection(selection: str, settings: PhloSettings) -> list[LocationPlan]:
    """Which assets of which location a selection means: `a,b` names, `a+` a and everything
    downstream, `+a` a and everything upstream."""
    from dagster import AssetKey, AssetSelection

    tokens = _parse_tokens(selection)
    use_settings(settings)
    plans: list[LocationPlan] = []
    known: dict[str, LocationPlan] = {}
    for ref in location_refs(settings):
        plan = LocationPlan(ref, load_definitions(ref), [])
        for key in plan.definitions.resolve_asset_graph().get_all_asset_keys():
            known[key.to_user_string()] = plan
        plans.append(plan)
    for name, upstream, downstream in tokens:
        if name not in known:
            listing = ", ".join(sorted(known))
            raise SelectionError(f"unknown asset {name!r}; known assets: {listing}")
        plan = known[name]
        chosen = AssetSelection.assets(AssetKey.from_user_string(name))
        if downstream:
            chosen = chosen.downstream()
        if upstream:
            chosen = chosen.upstream()
        for key in chosen.resolve(plan.definitions.resolve_asset_graph()):
            if key not in plan.keys:
                plan.keys.append(key)
    return [plan for plan in plans if plan.keys]


def materialize(
    selection: str,
    days: DayRange,
    settings: PhloSettings,
    *,
    on_start: Callable[[str, list[str]], None] | None = None,
) -> list[RunOutcome]:
    """Materialize the selection for the days, one in-process run per code location."""
    validate_days(days, settings)
    plans = plan_selection(selection, settings)
    instance = instance_for(settings)
    outcomes = []
    for plan in plans:
        names = sorted(k.to_user_string() for k in plan.keys)
        if on_start:
            on_start(plan.location.name, names)
        outcomes.append(_run(plan, names, days, instance))
    return outcomes


def _run(plan: LocationPlan, names: list[str], days: DayRange, instance: DagsterInstance) -> RunOutcome:
    job = plan.definitions.resolve_implicit_global_asset_job_def()
    last = days.end.fromordinal(days.end.toordinal() - 1)
    tags = {"phlo/selection": ",".join(names), "phlo/location": plan.location.name}
    partition_key = None
    if len(days) == 1:
        partition_key = days.start.isoformat()
    else:
        tags["dagster/asset_partition_range_start"] = days.start.isoformat()
        tags["dagster/asset_partition_range_end"] = last.isoformat()
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=instance,
        partition_key=partition_key,
        asset_selection=plan.keys,
        tags=tags,
        raise_on_error=False,
    )
    errors, failed_checks = [], []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data is not None:
            error = event.step_failure_data.error
            message = error.message.strip() if error else "step failed"
            user = event.step_failure_data.user_failure_data
            if user is not None and user.description:
                message = user.description
            errors.append(f"{event.step_key}: {message.splitlines()[0] if message else 'failed'}")
        evaluation = event.event_specific_data
        if event.event_type_value == "ASSET_CHECK_EVALUATION" and not getattr(evaluation, "passed", True):
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
    )
