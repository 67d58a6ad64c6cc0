"""`phlo report NAME`: a location's report for people, as a self-contained HTML page (and a PNG),
drawn offline from the lakehouse's marts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from cyclopts import Parameter

from phlo_cli.common import EXIT_FAILED, UsageError, command_settings, err, shown


def report(
    name: str,
    /,
    *,
    start: str | None = None,
    end: str | None = None,
    out: Path | None = None,
    png: Path | None = None,
    demo: bool = False,
    as_json: Annotated[bool, Parameter(name="--json")] = False,
) -> int:
    """Write a location's report for a window of days as an HTML page that opens without a
    network, and optionally a PNG of it. `phlo report list` names the reports there are.

    Every number comes from the marts of the lakehouse in PHLO_HOME (read-only). Without
    --start/--end the window is the report's usual span (14 days) ending at the newest day with
    data; with one of them, that span from or to it.

    Parameters
    ----------
    name
        The report (`list`: every location's reports, with what each shows).
    start
        First day of the window (YYYY-MM-DD, local).
    end
        Last day of the window, inclusive (YYYY-MM-DD).
    out
        The HTML file to write (default: NAME-report-START-END.html here).
    png
        Also write the report's picture to this PNG file.
    demo
        Report on the demo's lakehouse (PHLO_HOME/demo, sample data, marked SAMPLE).
    as_json
        Print the report's numbers and files as JSON instead of a summary line.
    """
    import datetime as dt

    from phlo_core.calendar import PartitionError, parse_day
    from phlo_core.demo import demo_settings
    from phlo_core.lakehouse.connect import LakehouseError
    from phlo_core.reports import ReportError, location_reports, render_report, write_report

    settings = command_settings(writes=False)
    reports = location_reports(settings)
    if name == "list":
        for known in sorted(reports.values(), key=lambda r: r.name):
            print(f"{known.name:<16} {known.title} (asset {known.asset_name})")
        return 0
    if name not in reports:
        known = ", ".join(sorted(reports)) or "none"
        raise UsageError(f"no report named {name!r} (reports: {known})")
    try:
        first = parse_day(start) if start else None
        last = parse_day(end) if end else None
    except PartitionError as exc:
        raise UsageError(str(exc)) from None
    if first and last and first > last:
        raise UsageError(f"--start {first} is after --end {last}")
    for path, option in ((out, "--out"), (png, "--png")):
        if path is not None and not path.parent.is_dir():
            raise UsageError(f"{option} {path}: folder {path.parent} does not exist")
    if png is not None and png.suffix.lower() != ".png":
        raise UsageError(f"--png {png}: give a file name ending in .png")
    home = demo_settings(settings) if demo else settings
    try:
        window, rendered = render_report(reports[name], home, first, last)
    except (ReportError, LakehouseError) as exc:
        err(f"{name} report: {exc}")
        return EXIT_FAILED
    last_day = window.end - dt.timedelta(days=1)
    target = out or Path(f"{name}-report-{window.start}-{last_day}.html")
    write_report(rendered, target, png)
    if as_json:
        files = {"html": str(target.resolve())} | ({"png": str(png.resolve())} if png else {})
        print(json.dumps({"report": name, **rendered.summary, "files": files}, default=str))
    else:
        also = f" and {shown(png)}" if png else ""
        sample = " (SAMPLE data)" if rendered.summary.get("sample") else ""
        print(f"{name} report {window.start}..{last_day}{sample}: {shown(target)}{also}")
    return 0
