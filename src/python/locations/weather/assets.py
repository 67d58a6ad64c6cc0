"""The weather ingestion asset: core's ingestion building block, given what only this source
knows (which UTC days to ask Open-Meteo for, the validation rules, the completeness warning)."""

import datetime as dt
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from dagster import AssetCheckSpec, AssetExecutionContext, AssetsDefinition

from locations.weather.client import OpenMeteoSource
from locations.weather.ingest import (
    OBSERVATION_COLUMNS,
    OBSERVATIONS_TABLE,
    REJECTED_COLUMNS,
    REJECTED_TABLE,
    WeatherBatch,
    prepare_batch,
)
from locations.weather.settings import Place
from phlo_core.calendar import DayRange, today, utc_bounds
from phlo_core.ingestion import Batch, CheckWarning, IngestionSpec, ingestion_asset
from phlo_core.lakehouse.writes import PartitionWrite
from phlo_core.log import get_logger
from phlo_core.settings import PhloSettings

ASSET_NAME = "dlt_weather_observations"
SOURCE = "open_meteo"  # the resource key of the source's client
log = get_logger(__name__)
COMPLETE_CHECK = "hours_complete"


def batch_writes(batch: WeatherBatch, places: Sequence[Place]) -> list[PartitionWrite]:
    """The batch's days in both tables, observations first (the table a shrink is measured on),
    each replacing the hours of the places fetched only: a place no longer in WEATHER_PLACES
    (or misspelt there) keeps the days it has."""
    keys: dict[str, Sequence[object]] = {"place": [place.name for place in places]}
    return [
        PartitionWrite.of_days(
            OBSERVATIONS_TABLE, OBSERVATION_COLUMNS, batch.days, batch.rows, keys=keys
        ),
        PartitionWrite.of_days(
            REJECTED_TABLE, REJECTED_COLUMNS, batch.days, batch.rejected, keys=keys
        ),
    ]


def prepare(context: AssetExecutionContext, days: DayRange, source: OpenMeteoSource) -> Batch:
    """A window of days for every place, validated and counted (the ingestion's `prepare`)."""
    settings, own = source.settings, source.own
    places = own.places
    start, end = utc_bounds(days, settings.timezone)
    last = (end - dt.timedelta(microseconds=1)).date()
    with source.client() as client:
        fetched = client.fetch(places, start.date(), last, today(ZoneInfo("UTC")))
    log.info(
        "fetched hours",
        days=days.label(),
        utc_days=f"{start.date()}..{last}",
        places=len(places),
        hours=len(fetched.hours),
        requests=fetched.requests,
    )
    batch = prepare_batch(
        fetched.hours, days, settings.timezone, len(places), now=dt.datetime.now(dt.UTC)
    )
    totals = batch.totals()
    incomplete = [
        f"{day}: {s.missing} of {s.expected} hours missing"
        for day, s in sorted(batch.stats.items())
        if s.missing
    ]
    return batch.prepared(
        writes=batch_writes(batch, places),
        max_rejected_pct=own.weather_max_rejected_pct,
        summary=(
            f"{totals.loaded} hourly observations loaded for {len(places)} place(s), "
            f"{totals.rejected} rejected, {totals.missing} hours missing "
            f"({len(batch.stats)} day(s), {fetched.requests} request(s))"
        ),
        metadata={
            "places": ", ".join(place.name for place in places),
            "hours_missing": totals.missing,
            "requests": fetched.requests,
        },
        warnings=[
            CheckWarning(
                COMPLETE_CHECK,
                passed=not incomplete,
                detail=(
                    f"INCOMPLETE ({'; '.join(incomplete[:5])}"
                    f"{'; ...' if len(incomplete) > 5 else ''}): the source has no values "
                    "for those hours yet; materialize the days again later"
                ),
                metadata={"incomplete_days": "; ".join(incomplete) or "none"},
            )
        ],
    )


def build_ingestion_asset(settings: PhloSettings) -> AssetsDefinition:
    """The ingestion asset, on the settings' calendar; places and limits come from the run's
    `open_meteo` resource."""
    return ingestion_asset(
        IngestionSpec(
            name=ASSET_NAME,
            group="weather",
            description=(
                "Hourly weather from Open-Meteo (archive, and forecast for the latest days) for "
                f"every place in WEATHER_PLACES, one local day a partition, into "
                f"lake.{OBSERVATIONS_TABLE} (rows failing validation: lake.{REJECTED_TABLE})."
            ),
            prepare=prepare,
            source=SOURCE,
            limit_setting="WEATHER_MAX_REJECTED_PCT",
            rows_noun="hourly observations",
            table=OBSERVATIONS_TABLE,
            warning_checks=[
                AssetCheckSpec(
                    COMPLETE_CHECK,
                    asset=ASSET_NAME,
                    blocking=False,
                    description=(
                        "Every place has every hour of each day (23 or 25 on daylight-saving "
                        "days); a warning: the archive lags, the day still loads."
                    ),
                )
            ],
        ),
        settings,
    )
