"""Which days of each daily asset are materialized, missing, failed or running, per the
Dagster instance (its asset index: the latest materialization and the latest planned
materialization of each partition) and the lakehouse (only materializations since it was
created count), for `phlo status` and `phlo backfill --missing`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from phlo_core.calendar import DayRange
from phlo_core.settings import PhloSettings

if TYPE_CHECKING:
    from phlo_core.runlogs.stores import LogSource


@dataclass
class AssetDays:
    asset: str
    location: str
    days: DayRange
    done: set[dt.date]
    failed: set[dt.date]  # the latest attempt's run failed or was canceled (done before or not)
    running: set[dt.date]  # the latest attempt's run has not finished

    def by_state(self) -> dict[str, list[dt.date]]:
        """The days in each state: done, missing, failed, running (each day in one)."""
        found: dict[str, list[dt.date]] = {"done": [], "missing": [], "failed": [], "running": []}
        for day in self.days.days():
            found[self.state(day)].append(day)
        return found

    def counts(self) -> dict[str, int]:
        """How many days are in each state."""
        return {state: len(days) for state, days in self.by_state().items()}

    def state(self, day: dt.date) -> str:
        if day in self.running:
            return "running"
        if day in self.failed:
            return "failed"
        return "done" if day in self.done else "missing"

    def to_dict(self) -> dict[str, object]:
        states = self.by_state()
        return {
            "asset": self.asset,
            "location": self.location,
            "first": self.days.start.isoformat(),
            "last": (self.days.end - dt.timedelta(days=1)).isoformat(),
            **{state: len(days) for state, days in states.items()},
            **{
                f"{state}_days": [day.isoformat() for day in states[state]]
                for state in ("missing", "failed", "running")
            },
        }


def materialized_partitions(
    source: LogSource,
    asset: Sequence[str],
    lake_created: dt.datetime | None,
    after_cursor: int | None = None,
) -> set[str]:
    """The partitions of `asset` materialized into THIS lakehouse (created at `lake_created`,
    None: there is none), after `after_cursor` when given. Dagster's history outlives a
    lakehouse that was replaced or moved away: what was written before it was created is not
    in it."""
    if lake_created is None:
        return set()
    after = after_cursor or 0
    if lake_created.timestamp() > 0:
        first = source.first_materialization_after(asset, lake_created)
        if first is None:
            return set()
        after = max(after, first - 1)
    latest = source.latest_materializations(asset)
    return {partition for partition, storage_id in latest.items() if storage_id > after}


def asset_days(
    source: LogSource,
    name: str,
    location: str,
    days: DayRange,
    lake_created: dt.datetime | None,
) -> AssetDays:
    """The state of each of `days` for one asset."""
    inside = set(days.days())

    def dates(partitions: Iterable[str]) -> set[dt.date]:
        found = set()
        for partition in partitions:
            try:
                day = dt.date.fromisoformat(partition)
            except ValueError:
                continue
            if day in inside:
                found.add(day)
        return found

    path = name.split("/")  # an asset key's user string
    done = dates(materialized_partitions(source, path, lake_created))
    attempts = source.unmaterialized_attempts(path)
    statuses = source.run_statuses(sorted(set(attempts.values())))
    failed: set[dt.date] = set()
    running: set[dt.date] = set()
    for partition, run_id in attempts.items():
        status = statuses.get(run_id)
        if status is None or status == "SUCCESS":
            continue  # a run deleted, or one that succeeded without this day (a failed check)
        target = failed if status in ("FAILURE", "CANCELED") else running
        target |= dates([partition])
    return AssetDays(name, location, days, done, failed, running)


def days_per_cell(days: int, width: int) -> int:
    """How many days one cell of a strip `width` cells wide stands for."""
    return max(1, -(-days // max(1, width)))


def cells(status: AssetDays, width: int) -> list[str]:
    """The days squeezed into at most `width` cells, each the state of its days: "done" (all),
    "some" (some done), "missing", "failed" (any failed) or "running" (any running)."""
    days = list(status.days.days())
    per_cell = days_per_cell(len(days), width)
    found = []
    for i in range(0, len(days), per_cell):
        states = {status.state(day) for day in days[i : i + per_cell]}
        if "running" in states:
            found.append("running")
        elif "failed" in states:
            found.append("failed")
        elif states == {"done"}:
            found.append("done")
        else:
            found.append("some" if "done" in states else "missing")
    return found


def daily_assets(settings: PhloSettings, selection: str | None) -> list[tuple[str, str]]:
    """(location, asset) of every daily-partitioned asset the selection means (all of the
    workspace's when None), in dependency order: from the asset index while it holds (no
    location is loaded), else from the locations, loaded once and remembered."""
    from phlo_core.runs.asset_index import current_index
    from phlo_core.runs.selection import PlannedNames, plan_names

    index = current_index(settings)
    if selection is None:
        plans = [PlannedNames(location, list(names)) for location, names in index.locations.items()]
    else:
        plans = plan_names(selection, index)
    found = []
    for plan in plans:
        graph = index.graphs[plan.location]
        order = {name: i for i, name in enumerate(graph.order)}
        daily = sorted(set(plan.names) & set(graph.daily), key=lambda n: (order.get(n, 0), n))
        found += [(plan.location, name) for name in daily]
    return found


def status_of(settings: PhloSettings, selection: str | None, days: DayRange) -> list[AssetDays]:
    """Every daily asset's days, read from Dagster's storage without opening an instance (no
    lock, no writes: a read-only home can be asked) and from the lakehouse's birth record."""
    from phlo_core.lakehouse.connect import lakehouse_created
    from phlo_core.runlogs.model import InstanceNotCreatedError, NoInstanceError
    from phlo_core.runlogs.stores import open_logs
    from phlo_core.runs.instance import InstanceError

    assets = daily_assets(settings, selection)
    created = lakehouse_created(settings)
    try:
        source = open_logs(settings)
    except InstanceNotCreatedError:  # nothing was ever run: every day is missing
        source = None
    except NoInstanceError as exc:
        raise InstanceError(str(exc)) from None
    return [
        asset_days(source, name, location, days, created)
        if source is not None
        else AssetDays(name, location, days, set(), set(), set())
        for location, name in assets
    ]


@dataclass
class RunQueue:
    """Dagster's run queue on the production instance: its limits and how many runs wait in
    it or run now (None: nothing recorded yet)."""

    max_concurrent_runs: int
    per_location: int
    tag_limits: list[dict[str, object]]
    active: dict[str, int] | None

    def summary(self) -> str:
        active = self.active or {}
        queued = active.get("QUEUED", 0)
        in_progress = sum(n for status, n in active.items() if status != "QUEUED")
        tags = "".join(_tag_limit(limit) for limit in self.tag_limits)
        return (
            f"runs: {queued} queued, {in_progress} in progress (Dagster's queue: at most "
            f"{self.max_concurrent_runs} at once, {self.per_location} per code location{tags})"
        )


def _tag_limit(limit: dict[str, object]) -> str:
    key, value = limit["key"], limit.get("value")
    if value is None:
        return f", {limit['limit']} tagged {key}"
    if isinstance(value, dict):
        return f", {limit['limit']} per value of {key}"
    return f", {limit['limit']} tagged {key}={value}"


def run_queue(settings: PhloSettings) -> RunQueue | None:
    """The queue of the production instance (None on the embedded default, which launches
    each run at once), with the runs it holds now."""
    from phlo_core.runlogs.model import InstanceNotCreatedError, NoInstanceError
    from phlo_core.runlogs.stores import open_logs

    if settings.dagster_postgres_url is None:
        return None
    try:
        active: dict[str, int] | None = open_logs(settings).active_runs()
    except (InstanceNotCreatedError, NoInstanceError):
        active = None
    return RunQueue(
        settings.phlo_max_concurrent_runs,
        settings.phlo_runs_per_location,
        settings.run_tag_limits,
        active,
    )
