"""`phlo materialize`: assets for a day or a range of days, in-process."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

from cyclopts import Parameter

from phlo_cli.common import (
    EXIT_FAILED,
    UsageError,
    command_settings,
    err,
    progress_printer,
    report_outcomes,
)

if TYPE_CHECKING:  # for annotations only: these modules load inside the commands
    pass


def materialize(
    selection: str,
    /,
    *,
    partition: Annotated[str | None, Parameter(name=["--partition", "-p"])] = None,
    verbose: Annotated[bool, Parameter(name=["--verbose", "-v"])] = False,
    allow_shrink: bool = False,
) -> int:
    """Materialize assets for a day or a range of days, in-process; runs show in Dagster's UI.

    Parameters
    ----------
    selection
        Asset names, comma-separated. `name+` adds everything downstream of it, `+name`
        everything upstream, e.g. `dlt_<source>+` (an ingestion asset and all it feeds). A
        table's name (`raw.<table>` or just `<table>`) means the asset that writes it; `phlo
        query "show all tables"` lists the tables, an unknown name lists the assets.
    partition
        A local day `YYYY-MM-DD`, or a range `YYYY-MM-DD..YYYY-MM-DD` (both ends included),
        run as one Dagster run. Needed when the selection has a daily asset; marts and
        publishing alone are rebuilt whole without it.
    verbose
        Show Dagster's own log lines and every partition's materialization.
    allow_shrink
        Let this run replace days that would lose more than PHLO_MAX_SHRINK_PCT of the rows
        they hold (a source that now answers far less). Without it such a run is stopped and
        nothing is written.
    """
    from phlo_core.calendar import PartitionError, parse_day_range
    from phlo_core.lakehouse.connect import LakehouseError
    from phlo_core.runs.engine import materialize as run_materialize
    from phlo_core.runs.engine import validate_days
    from phlo_core.runs.instance import InstanceError
    from phlo_core.runs.selection import SelectionError, check_selection, preflight_selection
    from phlo_core.workspace import WorkspaceError

    settings = command_settings()
    try:
        days = parse_day_range(partition) if partition is not None else None
        if days is not None:  # before any output; the engine checks again for its callers
            validate_days(days, settings)
        selection = check_selection(selection, settings)
        label = days.label() if days is not None else "the assets rebuilt whole"
        heading = [f"materializing {selection} for {label} ..."]
        # A missing setting is one line with nothing before it: checked here from the
        # remembered asset names, else by the engine before the first run starts.
        if preflight_selection(selection, settings):
            print(heading.pop(), file=sys.stderr)

        def started(location: str, assets: list[str]) -> None:
            while heading:
                print(heading.pop(), file=sys.stderr)
            print(
                f"{location}: running {len(assets)} asset(s): {', '.join(assets)}", file=sys.stderr
            )

        outcomes = run_materialize(
            selection,
            days,
            settings,
            on_start=started,
            on_progress=progress_printer(verbose, label),
            log_level="INFO" if verbose else "CRITICAL",
            allow_shrink=allow_shrink,
        )
    except (PartitionError, SelectionError) as exc:
        raise UsageError(str(exc)) from None
    except (WorkspaceError, LakehouseError, InstanceError) as exc:
        err(str(exc))
        return EXIT_FAILED
    return report_outcomes(outcomes)
