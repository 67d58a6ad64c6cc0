"""The Nightscout ingestion asset and its blocking rejection check."""

from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from locations.nightscout.client import NightscoutClient
from locations.nightscout.ingest import (
    ENTRIES_TABLE,
    REJECTED_TABLE,
    GlucoseBatch,
    prepare_batch,
    write_batch,
)
from phlo_core.calendar import epoch_ms, utc_bounds
from phlo_core.engine import SUMMARY_KEY
from phlo_core.partitions import SINGLE_RUN, daily_partitions, window_days
from phlo_core.settings import PhloSettings

ASSET_NAME = "dlt_glucose_entries"
REJECTED_CHECK = "rejected_rows_within_limit"


def _day_table(batch: GlucoseBatch) -> str:
    lines = [
        "| day | fetched | error codes | duplicates | rejected | loaded |",
        "|---|---|---|---|---|---|",
    ]
    for day, s in sorted(batch.stats.items()):
        lines.append(
            f"| {day} | {s.fetched} | {s.error_codes} | {s.duplicates} | "
            f"{s.rejected} ({s.rejected_pct:.1f}%) | {s.loaded} |"
        )
    return "\n".join(lines)


def build_ingestion_asset(settings: PhloSettings) -> AssetsDefinition:
    limit = settings.nightscout_max_rejected_pct

    @asset(
        name=ASSET_NAME,
        group_name="nightscout",
        partitions_def=daily_partitions(settings),
        backfill_policy=SINGLE_RUN,
        kinds={"python", "ducklake"},
        description=(
            "Sensor glucose entries from Nightscout's v1 API, one local day a partition, into "
            f"lake.{ENTRIES_TABLE} (rows failing validation: lake.{REJECTED_TABLE})."
        ),
        check_specs=[
            AssetCheckSpec(
                REJECTED_CHECK,
                asset=ASSET_NAME,
                blocking=True,
                description=f"No day has more than {limit:g}% of its readings rejected.",
            )
        ],
    )
    def dlt_glucose_entries(context: AssetExecutionContext) -> Iterator[Any]:
        window = context.partition_time_window
        days = window_days(window.start, window.end)
        start, end = utc_bounds(days, settings.timezone)
        with NightscoutClient.from_settings(settings) as client:
            fetched = client.fetch_entries(epoch_ms(start), epoch_ms(end))
        context.log.info(
            f"fetched {len(fetched.entries)} entries for {days.label()} "
            f"in {fetched.pages} page(s), {fetched.requests} request(s)"
        )
        batch = prepare_batch(fetched.entries, days, settings.timezone)
        totals = batch.totals()
        metadata = {
            "days": MetadataValue.md(_day_table(batch)),
            "rows_loaded": totals.loaded,
            "rows_rejected": totals.rejected,
            "sensor_error_codes_dropped": totals.error_codes,
            "duplicates_dropped": totals.duplicates,
            "other_entry_types_dropped": totals.other_types,
            "pages": fetched.pages,
            SUMMARY_KEY: (
                f"{totals.loaded} readings loaded, {totals.rejected} rejected, "
                f"{totals.error_codes} sensor error codes and {totals.duplicates} duplicates "
                f"dropped ({len(batch.stats)} day(s), {fetched.pages} page(s))"
            ),
        }
        over = batch.days_over(limit)
        if over:
            worst = ", ".join(f"{day} {s.rejected_pct:.1f}%" for day, s in sorted(over.items()))
            reasons = batch.rejected["reason"].value_counts().head(3)
            top = "; ".join(f"{reason} x{n}" for reason, n in reasons.items())
            yield AssetCheckResult(
                check_name=REJECTED_CHECK,
                passed=False,
                severity=AssetCheckSeverity.ERROR,
                metadata={**metadata, "top_reasons": top},
            )
            raise Failure(
                description=(
                    f"validation rejected more than {limit:g}% of the readings on {worst}; "
                    f"nothing was written (top reasons: {top})"
                ),
                metadata=metadata,
            )
        write_batch(batch, settings)
        yield MaterializeResult(
            metadata=metadata,
            check_results=[
                AssetCheckResult(
                    check_name=REJECTED_CHECK,
                    passed=True,
                    metadata={
                        "max_rejected_pct": max(
                            (s.rejected_pct for s in batch.stats.values()), default=0.0
                        )
                    },
                )
            ],
        )

    return dlt_glucose_entries
