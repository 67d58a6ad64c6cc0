"""A location's report as a Dagster asset: the report of the newest window written to
PHLO_HOME/reports/NAME.html after the assets it reads (phlo_core.reports).

Not in phlo_core.reports, whose module imports no Dagster (the CLI's `phlo report` loads fast)
and uses postponed annotations, which Dagster cannot resolve for an asset's context."""

import datetime as dt
from collections.abc import Iterator

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from phlo_core.reports import Report, render_report, write_report
from phlo_core.resources import LAKEHOUSE, Lakehouse, resource


def report_asset(report: Report, group: str) -> AssetsDefinition:
    """The asset that writes the report of the newest window to PHLO_HOME/reports/NAME.html,
    after the assets it reads; the page's path and headline numbers are its metadata."""

    @asset(
        name=report.asset_name,
        description=f"{report.title}: the latest {report.window_days} days, as an HTML page "
        "in PHLO_HOME/reports.",
        group_name=group,
        deps=[AssetKey(name) for name in report.upstream],
        required_resource_keys={LAKEHOUSE},
        kinds={"html"},
    )
    def _report(context: AssetExecutionContext) -> Iterator[MaterializeResult]:
        settings = resource(context, LAKEHOUSE, Lakehouse).settings
        window, rendered = render_report(report, settings)
        out = settings.home / "reports" / f"{report.name}.html"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_report(rendered, out)
        numbers = {
            key: value
            for key, value in rendered.summary.items()
            if isinstance(value, int | float | str)
        }
        yield MaterializeResult(
            metadata={
                "path": MetadataValue.path(str(out)),
                "window": f"{window.start}..{window.end - dt.timedelta(days=1)}",
                **numbers,
            }
        )

    return _report
