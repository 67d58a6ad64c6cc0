"""`phlo demo` and `phlo sample serve`: the pipelines on SAMPLE data served over each source's
real API."""

from __future__ import annotations

import re
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cyclopts import App

from phlo_cli.common import (
    EXIT_FAILED,
    command_settings,
    err,
    follow_services,
    progress_printer,
    report_outcomes,
    show_dashboards,
    shown,
)

if TYPE_CHECKING:  # for annotations only: these modules load inside the commands
    from phlo_core.settings import PhloSettings


sample_app = App(
    name="sample",
    help="The demo's sample sources, served over their real APIs for trying phlo on them.",
)


@sample_app.command(name="serve")
def sample_serve() -> int:
    """Serve every location's SAMPLE source on loopback until Ctrl-C, and print the settings
    that point phlo at them and at the demo's home: export them in another shell and run
    backfill, status, logs or the UI on the sample data (`phlo demo` made its first days)."""
    import threading

    from phlo_core.demo import sample_selections, sample_sources

    settings = command_settings()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with sample_sources(settings) as environment:
        print("# SAMPLE DATA sources, until Ctrl-C. In another shell:")
        for name, value in environment.items():
            print(f"export {name}={shlex.quote(value)}")
        first = next(iter(sample_selections(settings)), "<asset>+")
        print(
            f"# then e.g.: phlo backfill {first} --start-date 2024-01-15 "
            "--end-date 2024-02-15; phlo status; phlo logs",
            flush=True,
        )
        stop.wait()
    print("sample sources stopped", file=sys.stderr)
    return 0


def demo(*, dashboards: bool = False, catalog: bool = True) -> int:
    """Run every pipeline end to end on SAMPLE data served by local, protocol-true servers,
    then describe what they built in the metadata catalog (DataHub Lite).

    The sample lakehouse, Dagster instance and catalog live under PHLO_HOME/demo, apart from
    real data.

    Parameters
    ----------
    catalog
        Sync the demo's catalog at the end (`phlo catalog sync`; the first time installs
        DataHub's environment, shown as it goes). --no-catalog: leave it out.
    dashboards
        First start the local servers and Superset (`phlo services up --with superset`:
        installed once, a few minutes), run the demo on them (its marts published to
        PostgreSQL), then import the dashboards onto the demo's marts and print their
        addresses.
    """
    from phlo_cli.render import to_table
    from phlo_core.demo import demo_settings, run_demo

    settings = command_settings()
    if dashboards:
        from phlo_core.services.control import up
        from phlo_core.services.layout import ServiceError

        print("phlo demo: starting PostgreSQL, S3 and Superset on loopback", file=sys.stderr)
        try:
            up(settings, with_superset=True, progress=_indented)
        except ServiceError as exc:
            err(str(exc))
            return EXIT_FAILED
        follow_services(settings)
    print("phlo demo: SAMPLE DATA served over each source's real API on loopback", file=sys.stderr)
    started = time.perf_counter()
    result = run_demo(
        settings,
        on_source=lambda location, source: print(
            f"{location}: SAMPLE DATA from {source}", file=sys.stderr
        ),
        on_start=lambda location, assets: print(
            f"{location}: materializing {len(assets)} assets ...", file=sys.stderr
        ),
        on_progress=progress_printer(False, "all sample days"),
    )
    code = report_outcomes(result.outcomes)
    for report in result.reports:
        print(f"\n== {report.location}: {report.title} [SAMPLE DATA] ==")
        print(to_table(report.result.columns, report.result.rows))
    home = shown(result.settings.home)
    lakehouse = (
        f"PostgreSQL (catalog) and {result.settings.lake_data_path} (files), home {home}"
        if result.settings.on_servers
        else home
    )
    phlo = shown(Path(sys.argv[0]).absolute()) if sys.argv[0].endswith("phlo") else "phlo"
    if catalog and not code:
        code = _sync_catalog(result.settings)
    explore = "".join(
        f'explore it:  PHLO_HOME={home} {phlo} query "{sql}"\n' for sql in result.explore_sql
    )
    pages = sorted((result.settings.home / "reports").glob("*.html"))
    explore += "".join(
        f"read it:     {shown(page)} (any window: {phlo} report {page.stem} --demo "
        "--start YYYY-MM-DD --end YYYY-MM-DD)\n"
        for page in pages
    )
    # The last location's table (it reads the others'): its lineage spans every domain.
    table = re.search(r"\bfrom\s+(\S+)", result.explore_sql[-1]) if result.explore_sql else None
    if catalog and table and not code:
        explore += (
            f"trace it:    PHLO_HOME={home} {phlo} catalog lineage {table.group(1)} --upstream\n"
        )
    published = result.settings.phlo_publish_postgres_url
    if published is not None and not code:
        from urllib.parse import urlsplit

        target = urlsplit(published.get_secret_value())  # where, never who or the password
        address = f"{target.hostname}:{target.port or 5432}{target.path}"
        print(f"\nmarts published to PostgreSQL at {address} (schema marts)")
    print(
        f"\ndemo finished in {time.perf_counter() - started:.1f}s; "
        f"sample lakehouse in {lakehouse}\n"
        f"{explore}"
        f"go on with the sample data (backfill, status, logs): {phlo} sample serve\n"
        f"browse runs in Dagster's UI: {phlo} ui --demo"
    )
    if dashboards and not code:
        return _import_dashboards(settings, demo_settings(settings))
    return code


def _sync_catalog(demo_home: PhloSettings) -> int:
    from phlo_core.catalog.sync import CatalogError, sync

    print("catalog: describing the demo's datasets in DataHub Lite", file=sys.stderr)
    try:
        done = sync(demo_home, _indented)
    except CatalogError as exc:
        err(str(exc))
        return EXIT_FAILED
    print(
        f"\ncatalog: {done.datasets} datasets, {done.edges} lineage edges, "
        f"{done.assertions} tests, {done.jobs} jobs in {shown(Path(done.lite))}"
    )
    return 0


def _indented(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


def _import_dashboards(settings: PhloSettings, demo_home: PhloSettings) -> int:
    from phlo_core.services.control import dashboards_import
    from phlo_core.services.layout import ServiceError, layout

    try:
        found = dashboards_import(settings, demo_home)
    except ServiceError as exc:
        err(str(exc))
        return EXIT_FAILED
    print("\nSuperset's dashboards on the demo's published marts [SAMPLE DATA]:")
    show_dashboards(list(found), layout(settings).state_file, as_json=False)
    return 0
