"""The Nightscout ingestion asset and its blocking rejection check."""

import datetime as dt
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
from locations.nightscout.settings import nightscout_settings
from phlo_core.calendar import epoch_ms, minutes_in_day, utc_bounds
from phlo_core.engine import SUMMARY_KEY
from phlo_core.orphans import claim_run
from phlo_core.partitions import SINGLE_RUN, daily_partitions, window_days
from phlo_core.settings import PhloSettings
from phlo_core.shrink import ALLOW_SHRINK_TAG, ShrinkError

ASSET_NAME = "dlt_glucose_entries"
REJECTED_CHECK = "rejected_rows_within_limit"
SHRINK_CHECK = "no_unexpected_shrink"
VOLUME_CHECK = "readings_per_day_plausible"
# More readings in a day than this many times the expected count (minutes in the local day /
# NIGHTSCOUT_READING_INTERVAL_MINUTES) is implausible: a wrong interval or a flooding uploader.
PLAUSIBLE_FACTOR = 1.5


def implausible_days(batch: GlucoseBatch, settings: PhloSettings) -> dict[dt.date, str]:
    """Days whose loaded readings exceed PLAUSIBLE_FACTOR x expected, with a description."""
    interval = nightscout_settings(settings).nightscout_reading_interval_minutes
    found = {}
    for day, stats in sorted(batch.stats.items()):
        expected = minutes_in_day(day, settings.timezone) // interval
        if stats.loaded > PLAUSIBLE_FACTOR * expected:
            found[day] = f"{day}: {stats.loaded} readings, {expected} expected"
    return found


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
    limit = nightscout_settings(settings).nightscout_max_rejected_pct

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
            ),
            AssetCheckSpec(
                SHRINK_CHECK,
                asset=ASSET_NAME,
                blocking=True,
                description=(
                    "No day that holds readings loses more than PHLO_MAX_SHRINK_PCT of them "
                    f"(forced by PHLO_ALLOW_SHRINK or the run tag {ALLOW_SHRINK_TAG}=true)."
                ),
            ),
            AssetCheckSpec(
                VOLUME_CHECK,
                asset=ASSET_NAME,
                blocking=False,
                description=(
                    f"No day has more than {PLAUSIBLE_FACTOR:g}x the readings expected at "
                    "NIGHTSCOUT_READING_INTERVAL_MINUTES (a warning: the day still loads)."
                ),
            ),
        ],
    )
    def dlt_glucose_entries(context: AssetExecutionContext) -> Iterator[Any]:
        claim_run(context.instance, context.run.run_id, context.run.tags)
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
        implausible = implausible_days(batch, settings)
        volume_warning = (
            f"; IMPLAUSIBLE volume ({'; '.join(implausible.values())}): check "
            "NIGHTSCOUT_READING_INTERVAL_MINUTES and the uploaders"
            if implausible
            else ""
        )
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
                f"dropped ({len(batch.stats)} day(s), {fetched.pages} page(s)){volume_warning}"
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
        allow_shrink = (
            settings.phlo_allow_shrink or context.run.tags.get(ALLOW_SHRINK_TAG) == "true"
        )
        try:
            write_batch(batch, settings, allow_shrink=allow_shrink)
        except ShrinkError as exc:
            yield AssetCheckResult(
                check_name=SHRINK_CHECK,
                passed=False,
                severity=AssetCheckSeverity.ERROR,
                metadata={
                    "days": ", ".join(str(s.day) for s in exc.shrinks),
                    "stored_rows": sum(s.stored for s in exc.shrinks),
                    "incoming_rows": sum(s.incoming for s in exc.shrinks),
                },
            )
            raise Failure(description=str(exc), metadata=metadata) from None
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
                ),
                AssetCheckResult(
                    check_name=SHRINK_CHECK, passed=True, metadata={"forced": allow_shrink}
                ),
                AssetCheckResult(
                    check_name=VOLUME_CHECK,
                    passed=not implausible,
                    severity=AssetCheckSeverity.WARN,
                    metadata={"implausible_days": "; ".join(implausible.values()) or "none"},
                ),
            ],
        )

    return dlt_glucose_entries
