"""The ingestion building block every location uses: one asset that fetches a window of days
from a source, splits valid and rejected rows, checks the rejection limit, guards stored days
against a shrinking source, writes every table in one transaction and reports a summary.

A location supplies what only it knows, `prepare(context, days, source) -> Batch` (fetch over
HTTP with `phlo_core.http` through its source client, the Dagster resource named by
`IngestionSpec.source`; validate with `phlo_core.quality`; count), plus the names, its rejection
limit and any warning checks of its own; this module supplies the rest, the same for every source,
writing through the run's `lakehouse` resource:

- blocking check `rejected_rows_within_limit`: a day with more than `Batch.max_rejected_pct`
  percent of its rows rejected (the location's setting) fails the run and nothing is written;
- blocking check `no_unexpected_shrink`: inside the write transaction, a day that would lose
  more than PHLO_MAX_SHRINK_PCT of the rows it holds stops the write, unless forced;
- the write: every table's window replaced in ONE DuckLake transaction
  (`lakehouse.replace_partitions`), and only what the run fetched (`PartitionWrite.keys`): a
  location that fetches its days per place
  replaces those places' rows, so a place no longer configured keeps its history;
- the run summary (metadata key `summary`) that `phlo` prints.
"""

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

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

from phlo_core.calendar import DayRange
from phlo_core.lakehouse.shrink import ALLOW_SHRINK_TAG, ShrinkError, shrinking_days
from phlo_core.lakehouse.writes import PartitionWrite
from phlo_core.log import get_logger
from phlo_core.partitions import backfill_policy, daily_partitions, window_days
from phlo_core.resources import LAKEHOUSE, Lakehouse, resource
from phlo_core.runs.asset_index import TABLE_NAME_KEY
from phlo_core.runs.engine import SUMMARY_KEY
from phlo_core.runs.orphans import claim_run
from phlo_core.settings import PhloSettings

if TYPE_CHECKING:
    import datetime as dt

    import duckdb
    import pandas as pd

log = get_logger(__name__)
REJECTED_CHECK = "rejected_rows_within_limit"
SHRINK_CHECK = "no_unexpected_shrink"


@dataclass(frozen=True)
class CheckWarning:
    """The outcome of one of the location's own non-blocking checks."""

    check: str
    passed: bool
    detail: str  # shown in the summary when the check did not pass
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Batch:
    """What a location prepared for a window: the tables to write and the counts to check.

    `writes[0]` is the guarded table (its rows per day are what a shrink is measured on).
    """

    days: DayRange
    writes: Sequence[PartitionWrite]
    loaded: Mapping["dt.date", int]
    rejected: Mapping["dt.date", int]
    rejected_reasons: Sequence[str]
    max_rejected_pct: float  # the location's limit (a setting), checked per day
    summary: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    warnings: Sequence[CheckWarning] = ()

    def rejected_pct(self, day: "dt.date") -> float:
        candidates = self.loaded.get(day, 0) + self.rejected.get(day, 0)
        return 100.0 * self.rejected.get(day, 0) / candidates if candidates else 0.0

    def days_over(self) -> dict["dt.date", float]:
        return {
            day: pct
            for day in self.days.days()
            if (pct := self.rejected_pct(day)) > self.max_rejected_pct
        }


@dataclass
class DayStats:
    """One day's counts in a batch. A location's subclass adds the counts only its source has
    (fetched, missing hours ...) and names them for the day table in `source_counts`."""

    duplicates: int = 0
    rejected: int = 0
    loaded: int = 0

    @property
    def rejected_pct(self) -> float:
        candidates = self.rejected + self.loaded
        return 100.0 * self.rejected / candidates if candidates else 0.0

    def source_counts(self) -> dict[str, object]:
        """The source's own counts, as the day table's leading columns (header -> value)."""
        return {}

    def __add__(self, other: Self) -> Self:
        return type(self)(
            **{
                name.name: getattr(self, name.name) + getattr(other, name.name)
                for name in dataclasses.fields(self)
            }
        )


S = TypeVar("S", bound=DayStats)


@dataclass
class DayBatch(Generic[S]):
    """A window's valid rows, its rejected rows (with a `reason` column) and each day's counts:
    what a location's validation gives, before it becomes a `Batch`."""

    days: DayRange
    rows: "pd.DataFrame"
    rejected: "pd.DataFrame"
    stats: dict["dt.date", S]  # every day of the window

    def totals(self) -> S:
        first, *rest = self.stats.values()
        return sum(rest, start=first)

    def day_table(self) -> str:
        """The days as a markdown table: the source's counts, then duplicates, rejected, loaded."""
        rows = sorted(self.stats.items())
        heads = list(rows[0][1].source_counts()) if rows else []
        lines = [
            "| " + " | ".join(["day", *heads, "duplicates", "rejected", "loaded"]) + " |",
            "|" + "---|" * (len(heads) + 4),
        ]
        for day, s in rows:
            cells = [day, *s.source_counts().values(), s.duplicates]
            cells += [f"{s.rejected} ({s.rejected_pct:.1f}%)", s.loaded]
            lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
        return "\n".join(lines)

    def prepared(
        self,
        *,
        writes: Sequence[PartitionWrite],
        max_rejected_pct: float,
        summary: str,
        metadata: Mapping[str, Any] | None = None,
        warnings: Sequence[CheckWarning] = (),
    ) -> "Batch":
        """The batch to write and check: the counts per day, the rejections' reasons and the
        metadata every ingestion reports (the day table, rows loaded, rejected, duplicates
        dropped), then the location's own."""
        totals = self.totals()
        return Batch(
            days=self.days,
            writes=writes,
            loaded={day: s.loaded for day, s in self.stats.items()},
            rejected={day: s.rejected for day, s in self.stats.items()},
            rejected_reasons=[str(reason) for reason in self.rejected["reason"]],
            max_rejected_pct=max_rejected_pct,
            summary=summary,
            metadata={
                "days": MetadataValue.md(self.day_table()),
                "rows_loaded": totals.loaded,
                "rows_rejected": totals.rejected,
                "duplicates_dropped": totals.duplicates,
                **(metadata or {}),
            },
            warnings=warnings,
        )


@dataclass(frozen=True)
class IngestionSpec:
    name: str
    group: str
    description: str
    prepare: Callable[[AssetExecutionContext, DayRange, Any], Batch]  # (context, days, source)
    source: str  # the resource key of the location's source client
    limit_setting: str  # the setting holding the rejection limit, for the check's description
    rows_noun: str = "rows"  # what a row is, for messages: "readings", "observations"
    warning_checks: Sequence[AssetCheckSpec] = ()
    table: str = ""  # the table it writes (`raw.orders`): a name the selection accepts too


def _shrink_guard(
    guarded: PartitionWrite, loaded: Mapping["dt.date", int], max_shrink_pct: float
) -> Callable[["duckdb.DuckDBPyConnection"], None]:
    """Measures what the write replaces only: rows of keys the run did not fetch stay, so
    they are no loss (dropping a place from the settings is not a shrink)."""

    def guard(con: "duckdb.DuckDBPyConnection") -> None:
        where, params = guarded.scope()
        day = guarded.partition_column
        stored = dict(
            con.execute(
                f"select {day}, count(*) from {guarded.target} where {where} group by 1", params
            ).fetchall()
        )
        shrinks = shrinking_days(stored, loaded, max_shrink_pct)
        if shrinks:
            raise ShrinkError(guarded.label, shrinks, max_shrink_pct)

    return guard


def ingestion_asset(spec: IngestionSpec, settings: PhloSettings) -> AssetsDefinition:
    """The ingestion asset of a location, daily-partitioned (on the settings' calendar and days
    per backfill run: the only settings it reads when built), one run for a range of days."""

    @asset(
        name=spec.name,
        group_name=spec.group,
        partitions_def=daily_partitions(settings),
        backfill_policy=backfill_policy(settings),
        kinds={"python", "ducklake"},
        description=spec.description,
        required_resource_keys={LAKEHOUSE, spec.source},
        metadata={TABLE_NAME_KEY: f"lake.{spec.table}"} if spec.table else None,
        check_specs=[
            AssetCheckSpec(
                REJECTED_CHECK,
                asset=spec.name,
                blocking=True,
                description=(
                    f"No day has more than {spec.limit_setting} percent of its {spec.rows_noun} "
                    "rejected."
                ),
            ),
            AssetCheckSpec(
                SHRINK_CHECK,
                asset=spec.name,
                blocking=True,
                description=(
                    f"No day that holds {spec.rows_noun} loses more than PHLO_MAX_SHRINK_PCT of "
                    f"them (forced by PHLO_ALLOW_SHRINK or the run tag {ALLOW_SHRINK_TAG}=true)."
                ),
            ),
            *spec.warning_checks,
        ],
    )
    def _ingest(context: AssetExecutionContext) -> Iterator[Any]:
        lakehouse = resource(context, LAKEHOUSE, Lakehouse)
        source = getattr(context.resources, spec.source)
        claim_run(context.instance, context.run.run_id, context.run.tags)
        window = context.partition_time_window
        batch = spec.prepare(context, window_days(window.start, window.end), source)
        limit = batch.max_rejected_pct
        failed_warnings = [w.detail for w in batch.warnings if not w.passed]
        summary = batch.summary + "".join(f"; {detail}" for detail in failed_warnings)
        metadata = {**batch.metadata, SUMMARY_KEY: summary}

        over = batch.days_over()
        if over:
            worst = ", ".join(f"{day} {pct:.1f}%" for day, pct in sorted(over.items()))
            reasons: dict[str, int] = {}
            for reason in batch.rejected_reasons:
                reasons[reason] = reasons.get(reason, 0) + 1
            top = "; ".join(
                f"{reason} x{n}" for reason, n in sorted(reasons.items(), key=lambda r: -r[1])[:3]
            )
            yield AssetCheckResult(
                check_name=REJECTED_CHECK,
                passed=False,
                severity=AssetCheckSeverity.ERROR,
                metadata={**metadata, "top_reasons": top},
            )
            raise Failure(
                description=(
                    f"validation rejected more than {limit:g}% of the {spec.rows_noun} on "
                    f"{worst}; nothing was written (top reasons: {top})"
                ),
                metadata=metadata,
            )

        settings = lakehouse.settings
        allow_shrink = (
            settings.phlo_allow_shrink or context.run.tags.get(ALLOW_SHRINK_TAG) == "true"
        )
        writes = batch.writes
        guard = _shrink_guard(writes[0], batch.loaded, settings.phlo_max_shrink_pct)
        try:
            lakehouse.replace_partitions(writes, guard=None if allow_shrink else guard)
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

        log.info(
            "ingested",
            asset=spec.name,
            days=batch.days.label(),
            rows=sum(batch.loaded.values()),
            rejected=sum(batch.rejected.values()),
            forced=allow_shrink,
        )
        yield MaterializeResult(
            metadata=metadata,
            check_results=[
                AssetCheckResult(
                    check_name=REJECTED_CHECK,
                    passed=True,
                    metadata={
                        "max_rejected_pct": max(
                            (batch.rejected_pct(day) for day in batch.days.days()), default=0.0
                        )
                    },
                ),
                AssetCheckResult(
                    check_name=SHRINK_CHECK, passed=True, metadata={"forced": allow_shrink}
                ),
                *(
                    AssetCheckResult(
                        check_name=w.check,
                        passed=w.passed,
                        severity=AssetCheckSeverity.WARN,
                        metadata=dict(w.metadata),
                    )
                    for w in batch.warnings
                ),
            ],
        )

    return _ingest
