"""The Nightscout ingestion asset: core's ingestion building block, given what only this
source knows (how to fetch a window of entries, the cleaning rules, the volume warning)."""

import datetime as dt
from zoneinfo import ZoneInfo

from dagster import AssetCheckSpec, AssetExecutionContext, AssetsDefinition

from locations.nightscout.client import NightscoutSource
from locations.nightscout.ingest import (
    ENTRIES_TABLE,
    REJECTED_TABLE,
    GlucoseBatch,
    batch_writes,
    prepare_batch,
)
from phlo_core.calendar import DayRange, epoch_ms, minutes_in_day, utc_bounds
from phlo_core.ingestion import Batch, CheckWarning, IngestionSpec, ingestion_asset
from phlo_core.log import get_logger
from phlo_core.settings import PhloSettings

ASSET_NAME = "dlt_glucose_entries"
SOURCE = "nightscout"  # the resource key of the site's client
log = get_logger(__name__)
VOLUME_CHECK = "readings_per_day_plausible"
# More readings in a day than this many times the expected count (minutes in the local day /
# NIGHTSCOUT_READING_INTERVAL_MINUTES) is implausible: a wrong interval or a flooding uploader.
PLAUSIBLE_FACTOR = 1.5


def implausible_days(
    batch: GlucoseBatch, tz: ZoneInfo, interval_minutes: int
) -> dict[dt.date, str]:
    """Days whose loaded readings exceed PLAUSIBLE_FACTOR x expected, with a description."""
    found = {}
    for day, stats in sorted(batch.stats.items()):
        expected = minutes_in_day(day, tz) // interval_minutes
        if stats.loaded > PLAUSIBLE_FACTOR * expected:
            found[day] = f"{day}: {stats.loaded} readings, {expected} expected"
    return found


def prepare(context: AssetExecutionContext, days: DayRange, source: NightscoutSource) -> Batch:
    """A window of days from the site, validated and counted (the ingestion's `prepare`)."""
    settings, site = source.settings, source.site
    start, end = utc_bounds(days, settings.timezone)
    with source.client() as client:
        fetched = client.fetch_entries(epoch_ms(start), epoch_ms(end))
    log.info(
        "fetched entries",
        days=days.label(),
        entries=len(fetched.entries),
        pages=fetched.pages,
        requests=fetched.requests,
    )
    batch = prepare_batch(fetched.entries, days, settings.timezone)
    totals = batch.totals()
    implausible = implausible_days(
        batch, settings.timezone, site.nightscout_reading_interval_minutes
    )
    return batch.prepared(
        writes=batch_writes(batch),
        max_rejected_pct=site.nightscout_max_rejected_pct,
        summary=(
            f"{totals.loaded} readings loaded, {totals.rejected} rejected, "
            f"{totals.error_codes} sensor error codes and {totals.duplicates} duplicates "
            f"dropped ({len(batch.stats)} day(s), {fetched.pages} page(s))"
        ),
        metadata={
            "sensor_error_codes_dropped": totals.error_codes,
            "other_entry_types_dropped": totals.other_types,
            "pages": fetched.pages,
        },
        warnings=[
            CheckWarning(
                VOLUME_CHECK,
                passed=not implausible,
                detail=(
                    f"IMPLAUSIBLE volume ({'; '.join(implausible.values())}): check "
                    "NIGHTSCOUT_READING_INTERVAL_MINUTES and the uploaders"
                ),
                metadata={"implausible_days": "; ".join(implausible.values()) or "none"},
            )
        ],
    )


def build_ingestion_asset(settings: PhloSettings) -> AssetsDefinition:
    """The ingestion asset, on the settings' calendar; the site is the `nightscout` resource."""
    return ingestion_asset(
        IngestionSpec(
            name=ASSET_NAME,
            group="nightscout",
            description=(
                "Sensor glucose entries from Nightscout's v1 API, one local day a partition, "
                f"into lake.{ENTRIES_TABLE} (rows failing validation: lake.{REJECTED_TABLE})."
            ),
            prepare=prepare,
            source=SOURCE,
            limit_setting="NIGHTSCOUT_MAX_REJECTED_PCT",
            rows_noun="readings",
            table=ENTRIES_TABLE,
            warning_checks=[
                AssetCheckSpec(
                    VOLUME_CHECK,
                    asset=ASSET_NAME,
                    blocking=False,
                    description=(
                        f"No day has more than {PLAUSIBLE_FACTOR:g}x the readings expected at "
                        "NIGHTSCOUT_READING_INTERVAL_MINUTES (a warning: the day still loads)."
                    ),
                )
            ],
        ),
        settings,
    )
