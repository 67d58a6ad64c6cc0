"""`phlo status`: which days of each daily asset are done, missing, failed or running."""

from __future__ import annotations

import datetime as dt
import os
import sys
from typing import TYPE_CHECKING, Annotated

from cyclopts import Parameter

from phlo_cli.common import (
    EXIT_FAILED,
    UsageError,
    command_settings,
    err,
    read_nothing,
    terminal_width,
)

if TYPE_CHECKING:  # for annotations only: these modules load inside the commands
    from phlo_core.calendar import DayRange
    from phlo_core.runs.status import AssetDays


def status(
    selection: str | None = None,
    /,
    *,
    start_date: str | None = None,
    end_date: str | None = None,
    as_json: Annotated[bool, Parameter(name="--json")] = False,
) -> int:
    """Which days of each daily asset are materialized, missing, failed or running, per
    Dagster's instance: counts and a calendar strip, one line an asset.

    Parameters
    ----------
    selection
        As in `phlo materialize` (`name+` adds what is downstream); every daily asset of the
        workspace when omitted.
    start_date
        First day shown (default: PHLO_PARTITION_START).
    end_date
        Last day shown, included (default: today).
    as_json
        A JSON list, one object an asset: counts and the missing, failed and running days.
    """
    import json

    from phlo_core.calendar import DayRange, PartitionError, check_within, parse_day, today
    from phlo_core.lakehouse.connect import LakehouseError
    from phlo_core.runs.instance import InstanceError
    from phlo_core.runs.selection import SelectionError, check_selection
    from phlo_core.runs.status import run_queue, status_of
    from phlo_core.workspace import WorkspaceError

    settings = command_settings(writes=False)
    try:
        first = parse_day(start_date) if start_date else settings.phlo_partition_start
        last = parse_day(end_date) if end_date else today(settings.timezone)
        if last < first:
            raise UsageError(f"--end-date {last} is before --start-date {first}")
        days = DayRange(first, last + dt.timedelta(days=1))
        check_within(days, settings.phlo_partition_start, today(settings.timezone))
        if selection is not None:
            selection = check_selection(selection, settings)
        found = status_of(settings, selection, days)
    except (PartitionError, SelectionError) as exc:
        raise UsageError(str(exc)) from None
    except (WorkspaceError, InstanceError, LakehouseError) as exc:
        err(str(exc))
        return EXIT_FAILED
    if as_json:
        print(json.dumps([asset.to_dict() for asset in found]))
        return 0
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    print(status_table(found, days, colour=colour, width=terminal_width()))
    queue = run_queue(settings)
    if queue is not None:
        print(queue.summary())
    if not any(asset.done for asset in found):
        read_nothing(settings, "no day is materialized", "status")
    return 0


def status_table(found: list[AssetDays], days: DayRange, *, colour: bool, width: int) -> str:
    """One line an asset: counts, then its days as a strip fitted to the terminal."""
    from phlo_cli.render import to_table
    from phlo_core.runs.status import cells, days_per_cell

    symbols = {"done": "#", "some": "+", "missing": ".", "failed": "x", "running": ">"}
    colours = {"done": "32", "some": "33", "missing": "2", "failed": "31", "running": "36"}
    rows = []
    name_width = max((len(a.asset) for a in found), default=5)
    strip_width = max(10, width - name_width - 36)
    for asset in found:
        counts = asset.counts()
        strip = cells(asset, strip_width)
        text = "".join(
            f"\x1b[{colours[c]}m{symbols[c]}\x1b[0m" if colour else symbols[c] for c in strip
        )
        rows.append((asset.asset, counts["done"], counts["missing"], counts["failed"], text))
    if not found:
        return "no daily-partitioned asset in the selection"
    last = days.end - dt.timedelta(days=1)
    per_cell = days_per_cell(len(days), strip_width)
    scale = "a day a cell" if per_cell == 1 else f"{per_cell} days a cell"
    legend = (
        f"{days.start}..{last} ({len(days)} days, {scale}): # done  + partly done  . missing  "
        "x failed  > running"
    )
    return to_table(["asset", "done", "missing", "failed", "days"], rows) + "\n" + legend
