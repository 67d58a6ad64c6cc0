"""What concerns the whole lakehouse, whichever domains write to it, in a code location of its
own (`lakehouse` in the workspace file): the maintenance as a Dagster job with a nightly schedule
(`phlo maintenance` runs the same function from a terminal), and `datahub_metadata`, the
metadata catalog synced after every project's models (`phlo catalog sync` from a terminal)."""

from dagster import (
    DefaultScheduleStatus,
    Definitions,
    JobDefinition,
    OpExecutionContext,
    ScheduleDefinition,
    definitions,
    job,
    op,
)

from phlo_core.catalog.asset import catalog_asset
from phlo_core.lakehouse.maintenance import maintain
from phlo_core.resources import LAKEHOUSE, Lakehouse, default_resources, resource
from phlo_core.settings import PhloSettings, get_settings

JOB_NAME = "lakehouse_maintenance"


def maintenance_job() -> JobDefinition:
    @op(name="maintain_lakehouse", required_resource_keys={LAKEHOUSE})
    def maintain_lakehouse(context: OpExecutionContext) -> None:
        report = maintain(resource(context, LAKEHOUSE, Lakehouse).settings)
        context.log.info(report.summary())

    @job(
        name=JOB_NAME,
        description=(
            "Expire DuckLake snapshots older than PHLO_SNAPSHOT_RETENTION_DAYS, delete files "
            "nothing references, merge small files."
        ),
    )
    def _job() -> None:
        maintain_lakehouse()

    return _job


def maintenance_schedule(
    settings: PhloSettings, *, hour: int = 3, minute: int = 30
) -> ScheduleDefinition:
    return ScheduleDefinition(
        name=f"{JOB_NAME}_schedule",
        job_name=JOB_NAME,
        cron_schedule=f"{minute} {hour} * * *",
        execution_timezone=settings.phlo_timezone,
        default_status=DefaultScheduleStatus.RUNNING,
        description="Every night: lakehouse maintenance (cheap when there is little to do).",
    )


def build_definitions(settings: PhloSettings | None = None) -> Definitions:
    """The job and its schedule (in the settings' time zone), the catalog asset after the
    models of the projects; the run's settings reach them through the `lakehouse` resource."""
    settings = settings or get_settings()
    return Definitions(
        assets=[catalog_asset(settings, group_name="lakehouse")],
        jobs=[maintenance_job()],
        schedules=[maintenance_schedule(settings)],
        resources=default_resources(),
    )


@definitions
def defs() -> Definitions:
    """Loaded lazily, so that importing the module builds nothing (settings may change first)."""
    return build_definitions()
