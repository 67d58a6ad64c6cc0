"""The example location's ingestion asset: core's ingestion building block, given what only
this source knows (how to fetch a window of days, the validation rules)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandera.pandas as pa
from dagster import AssetExecutionContext, AssetsDefinition

from locations.example.source import ExampleSource
from phlo_core.calendar import DayRange, utc_bounds
from phlo_core.ingestion import Batch, DayBatch, DayStats, IngestionSpec, ingestion_asset
from phlo_core.lakehouse.writes import PartitionWrite
from phlo_core.quality import split_by_schema, typed_frame
from phlo_core.settings import PhloSettings

ASSET_NAME = "example_events"
SOURCE = "example_source"  # the resource key of the source's client
EVENTS_TABLE = "raw.example_events"
REJECTED_TABLE = "raw.example_events_rejected"
COLUMNS = {
    "partition_date": "date",
    "event_id": "varchar",
    "occurred_at": "timestamptz",
    "value": "integer",
}
REJECTED_COLUMNS = {**COLUMNS, "reason": "varchar"}
SCHEMA = pa.DataFrameSchema(
    {
        "event_id": pa.Column(str, unique=True),
        "value": pa.Column("Int64", pa.Check.in_range(0, 1000)),
    },
    name="example_event",
    strict=False,
)


def _record(event: dict[str, Any], tz: dt.tzinfo) -> dict[str, Any]:
    at = dt.datetime.fromisoformat(str(event.get("at"))).astimezone(dt.UTC)
    value = event.get("value")
    return {
        "partition_date": at.astimezone(tz).date(),
        "event_id": str(event.get("id")),
        "occurred_at": at,
        "value": value if isinstance(value, int) else None,
    }


def prepare(context: AssetExecutionContext, days: DayRange, source: ExampleSource) -> Batch:
    """A window of days from the source, validated and counted (the ingestion's `prepare`)."""
    tz = source.settings.timezone
    start, end = utc_bounds(days, tz)
    frame = typed_frame([_record(event, tz) for event in source.events(start, end)], COLUMNS)
    split = split_by_schema(frame, SCHEMA)
    stats = {day: DayStats() for day in days.days()}
    for day in split.valid["partition_date"]:
        stats[day].loaded += 1
    for day in split.rejected["partition_date"]:
        stats[day].rejected += 1
    batch = DayBatch(days, split.valid, split.rejected, stats)
    totals = batch.totals()
    return batch.prepared(
        writes=[
            PartitionWrite.of_days(EVENTS_TABLE, COLUMNS, days, batch.rows[list(COLUMNS)]),
            PartitionWrite.of_days(
                REJECTED_TABLE, REJECTED_COLUMNS, days, batch.rejected[list(REJECTED_COLUMNS)]
            ),
        ],
        max_rejected_pct=source.own.example_max_rejected_pct,
        summary=f"{totals.loaded} events loaded, {totals.rejected} rejected",
    )


def build_ingestion_asset(settings: PhloSettings) -> AssetsDefinition:
    """The ingestion asset, on the settings' calendar; the source is the run's resource."""
    return ingestion_asset(
        IngestionSpec(
            name=ASSET_NAME,
            group="example",
            description=(
                f"Events from the example source, one local day a partition, into "
                f"lake.{EVENTS_TABLE} (rows failing validation: lake.{REJECTED_TABLE})."
            ),
            prepare=prepare,
            source=SOURCE,
            limit_setting="EXAMPLE_MAX_REJECTED_PCT",
            rows_noun="events",
            table=EVENTS_TABLE,
        ),
        settings,
    )
