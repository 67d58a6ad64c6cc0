"""`phlo demo`: every location that ships a sample source, run end to end on sample data.

A location takes part by having a `demo` module next to its definitions with `DAYS` (a
DayRange), `SELECTION`, `REPORTS` (title, SQL), `SOURCE` (what serves the sample, for the
user), `EXPLORE_SQL` (a query to suggest afterwards) and `sample_source(settings)`, a context
manager that serves the sample data over the source's real protocol and yields settings
overrides. A location without a source of its own (one that only reads others' tables) has
just `REPORTS` and `EXPLORE_SQL`: shown when its run (reached by the others' `+` selections)
succeeded.
The demo writes to its own lakehouse and Dagster instance under PHLO_HOME/demo, so sample data
never mixes with real data; with `phlo services` running, to their own databases and S3 prefix
(PHLO_HOME/demo/services.env), on the production profile.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from types import ModuleType

from phlo_core.calendar import DayRange
from phlo_core.lakehouse.connect import QueryResult, query
from phlo_core.reports import mark_sample_home
from phlo_core.runs.engine import RunOutcome, materialize
from phlo_core.runs.progress import ProgressCallback
from phlo_core.settings import PhloSettings, services_profile, with_overrides
from phlo_core.workspace import location_refs


@dataclass
class DemoReport:
    location: str
    title: str
    result: QueryResult


@dataclass
class DemoResult:
    settings: PhloSettings
    outcomes: list[RunOutcome]
    reports: list[DemoReport]
    explore_sql: list[str]


def demo_modules(settings: PhloSettings) -> dict[str, ModuleType]:
    modules = {}
    for ref in location_refs(settings):
        name = f"{ref.package}.demo"
        if importlib.util.find_spec(name) is None:
            continue
        module = importlib.import_module(name)
        if hasattr(module, "REPORTS"):  # not a location's demo (this module, for one)
            modules[ref.name] = module
    return modules


def demo_settings(settings: PhloSettings) -> PhloSettings:
    home = settings.home / "demo"
    profile: dict[str, object] = {
        "phlo_lake_catalog": None,
        "phlo_lake_data_path": None,
        "phlo_dagster_postgres_url": None,
        "phlo_publish_postgres_url": None,
    }
    profile.update(services_profile(home))
    return with_overrides(settings, phlo_home=home, dagster_home=home / "dagster", **profile)


def run_demo(
    settings: PhloSettings,
    *,
    on_start: Callable[[str, list[str]], None] | None = None,
    on_progress: ProgressCallback | None = None,
    on_source: Callable[[str, str], None] | None = None,
) -> DemoResult:
    """Every sample source served at once and ONE materialize of all their selections: the plan
    runs each location once, after every location it reads (a location joining two others'
    tables after both), so no mart is built before its inputs exist."""
    base = demo_settings(settings)
    mark_sample_home(base)  # what is built here is sample data: reports say so
    modules = demo_modules(settings)
    sourced = {name: m for name, m in modules.items() if getattr(m, "SELECTION", None)}
    with ExitStack() as stack:
        overrides: dict[str, object] = {}
        for location, module in sourced.items():
            if on_source:
                on_source(location, module.SOURCE)
            overrides |= stack.enter_context(module.sample_source(base))
        days = DayRange(
            min(m.DAYS.start for m in sourced.values()), max(m.DAYS.end for m in sourced.values())
        )
        start = min(base.phlo_partition_start, days.start)
        run_settings = with_overrides(base, **overrides, phlo_partition_start=start)
        outcomes = materialize(
            ",".join(m.SELECTION for m in sourced.values()),
            days,
            run_settings,
            on_start=on_start,
            on_progress=on_progress,
            log_level="CRITICAL",
        )
    succeeded = {o.location for o in outcomes if o.success}
    reports = [
        DemoReport(location, title, query(sql, run_settings))
        for location, module in modules.items()
        if location in succeeded
        for title, sql in module.REPORTS
    ]
    return DemoResult(base, outcomes, reports, [m.EXPLORE_SQL for m in modules.values()])


@contextmanager
def sample_sources(settings: PhloSettings) -> Iterator[dict[str, str]]:
    """Every location's sample source served, as long as the block runs: the environment
    (variable -> value) that points phlo at them and at the demo's home, so that backfill,
    status, logs and the UI can be tried on the sample data after the demo."""
    base = demo_settings(settings)
    environment = {"PHLO_HOME": str(base.home)}
    with ExitStack() as stack:
        for module in demo_modules(settings).values():
            if getattr(module, "SELECTION", None) is None:
                continue
            overrides = stack.enter_context(module.sample_source(base))
            environment |= {name.upper(): str(value) for name, value in overrides.items()}
        yield environment


def sample_selections(settings: PhloSettings) -> list[str]:
    """What each location with a sample source runs in the demo (its ingestion and all it
    feeds): examples of selections that exist in this workspace."""
    return [m.SELECTION for m in demo_modules(settings).values() if getattr(m, "SELECTION", None)]
