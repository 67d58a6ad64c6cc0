"""The skeleton of every code location's definitions: its assets (its own, such as an
ingestion, and the models of its dbt project), one job over its group, a nightly schedule, the
shared resources plus its own, and phlo's executor (in process, or on Celery workers). A
location's `definitions.py` calls `location_definitions` with what only it knows."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dagster import (
    AssetsDefinition,
    AssetSelection,
    DefaultScheduleStatus,
    Definitions,
    ScheduleDefinition,
    define_asset_job,
)

from phlo_core.dbt.assets import RunVars, build_dbt_assets
from phlo_core.partitions import daily_schedule
from phlo_core.report_asset import report_asset
from phlo_core.reports import Report
from phlo_core.resources import default_resources
from phlo_core.runs.executor import STEP_OUTPUTS, phlo_executor
from phlo_core.settings import PhloSettings, get_settings
from phlo_core.workspace import DBT_ROOT


@dataclass(frozen=True)
class Nightly:
    """When the location's job runs every night (local time, PHLO_TIMEZONE); stopped until
    turned on. A partitioned job runs for the day that just ended."""

    hour: int = 1
    minute: int = 15
    description: str = "Every night."  # for an unpartitioned job (a partitioned one names its day)


def location_definitions(
    settings: PhloSettings | None,
    *,
    group: str,
    job_name: str,
    job_description: str,
    ingestion: Callable[[PhloSettings], AssetsDefinition] | None = None,
    assets: Sequence[AssetsDefinition] = (),
    dbt_project: str | Path | None = None,
    dbt_vars: RunVars | None = None,
    resources: Mapping[str, object] | None = None,
    nightly: Nightly | None = None,
    reports: Sequence[Report] = (),
) -> Definitions:
    """The location's definitions on the calendar of `settings` (default: the environment's);
    every other setting reaches a run through its resources.

    `ingestion` builds the location's ingestion asset on the settings' calendar; `dbt_project`
    is the project's folder, or its name under src/dbt; its models join the group,
    built with the vars `dbt_vars` gives for a run's settings. Each of `reports` is an asset
    of the group that writes the report after the assets it reads."""
    settings = settings or get_settings()
    everything = [*([ingestion(settings)] if ingestion else []), *assets]
    if dbt_project is not None:
        folder = DBT_ROOT / dbt_project if isinstance(dbt_project, str) else dbt_project
        everything += build_dbt_assets(folder, settings, group_name=group, run_vars=dbt_vars)
    everything += [report_asset(report, group) for report in reports]
    job = define_asset_job(
        job_name, selection=AssetSelection.groups(group), description=job_description
    )
    when = nightly or Nightly()
    if any(asset.partitions_def is not None for asset in everything):
        schedule = daily_schedule(job.name, settings, hour=when.hour, minute=when.minute)
    else:
        schedule = ScheduleDefinition(
            name=f"{job.name}_schedule",
            job=job,
            cron_schedule=f"{when.minute} {when.hour} * * *",
            execution_timezone=settings.phlo_timezone,
            default_status=DefaultScheduleStatus.STOPPED,
            description=when.description,
        )
    return Definitions(
        assets=everything,
        jobs=[job],
        schedules=[schedule],
        resources={**default_resources(), "io_manager": STEP_OUTPUTS, **(resources or {})},
        # Runs launched from the UI, a schedule or the daemon: in one process, as `phlo
        # materialize` runs them, or on Celery workers (PHLO_EXECUTOR: phlo_core.runs.executor).
        executor=phlo_executor,
    )
