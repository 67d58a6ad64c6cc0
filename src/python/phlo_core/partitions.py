"""Dagster's view of Phlo's partitions: local calendar days from PHLO_PARTITION_START.

Today is a valid partition: CGM users look at the current day, and re-materializing it later
replaces it (every write is idempotent).
"""

from __future__ import annotations

import datetime as dt
import warnings

from dagster import BackfillPolicy, BetaWarning, DailyPartitionsDefinition

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

# One run covers a whole range of days: per-run overhead, not data volume, dominates here.
SINGLE_RUN = BackfillPolicy.single_run()


def window_days(start: dt.datetime, end: dt.datetime) -> DayRange:
    """The local days of a Dagster partition time window (its datetimes are in PHLO_TIMEZONE)."""
    return DayRange(start.date(), end.date())
