"""Dagster's view of Phlo's partitions: local calendar days from PHLO_PARTITION_START.

Today is a valid partition: CGM users look at the current day, and re-materializing it later
replaces it (every write is idempotent).
"""

from __future__ import annotations

import datetime as dt
import warnings

from dagster import (
    BackfillPolicy,
    BetaWarning,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    schedule,
)

from phlo_core.calendar import DayRange
from phlo_core.settings import PhloSettings


def daily_partitions(settings: PhloSettings) -> DailyPartitionsDefinition:
    return DailyPartitionsDefinition(
        start_date=settings.phlo_partition_start.isoformat(),
        timezone=settings.phlo_timezone,
        end_offset=1,
    )


# Single-run backfill policies are beta in Dagster 1.13 and central to Phlo's speed.
warnings.filterwarnings("ignore", category=BetaWarning)


def backfill_policy(settings: PhloSettings) -> BackfillPolicy:
    """How the runs of a backfill Dagster makes (the daemon's, the UI's) split its days: one
    run for up to PHLO_BACKFILL_DAYS_PER_RUN days (per-run overhead, not data volume, dominates
    here; several runs can go at once, on Celery workers too, within the queue's limits)."""
    return BackfillPolicy.multi_run(settings.phlo_backfill_days_per_run)


def daily_schedule(
    job_name: str, settings: PhloSettings, *, hour: int = 1, minute: int = 15
) -> ScheduleDefinition:
    """Run the job every night for the local day that just ended (stopped until turned on)."""

    @schedule(
        name=f"{job_name}_schedule",
        job_name=job_name,
        cron_schedule=f"{minute} {hour} * * *",
        execution_timezone=settings.phlo_timezone,
        default_status=DefaultScheduleStatus.STOPPED,
        description="Every night: the previous local day.",
    )
    def _nightly(context: ScheduleEvaluationContext) -> RunRequest:
        scheduled = context.scheduled_execution_time or dt.datetime.now(settings.timezone)
        day = scheduled.astimezone(settings.timezone).date() - dt.timedelta(days=1)
        return RunRequest(run_key=day.isoformat(), partition_key=day.isoformat())

    return _nightly


def window_days(start: dt.datetime, end: dt.datetime) -> DayRange:
    """The local days of a Dagster partition time window (its datetimes are in PHLO_TIMEZONE)."""
    return DayRange(start.date(), end.date())
