"""`phlo logs`: run logs from the Dagster instance, filtered in its own SQL."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated

from cyclopts import Parameter

from phlo_cli.common import (
    EXIT_FAILED,
    UsageError,
    command_settings,
    demo_hint,
    err,
    read_nothing,
)

if TYPE_CHECKING:  # for annotations only: these modules load inside the commands
    pass


MAX_LOG_LIMIT = 1_000_000_000  # more entries than any instance holds; past 2**31 SQL drivers fail


def logs(
    *,
    asset: str | None = None,
    job: str | None = None,
    level: str = "DEBUG",
    since: str | None = None,
    run_id: str | None = None,
    backfill: str | None = None,
    follow: Annotated[bool, Parameter(name=["--follow", "-f"])] = False,
    full: bool = False,
    as_json: Annotated[bool, Parameter(name="--json")] = False,
    limit: int = 100,
) -> int:
    """Run logs from the Dagster instance (DAGSTER_HOME), however the runs were started.

    Entries are the lines steps logged, run starts and ends, step failures with their error,
    materializations and check results; oldest first. Filters combine, and are applied in the
    event log's own SQL.

    Parameters
    ----------
    asset
        Only entries of this asset: its materializations and checks, and the lines and
        failures of the steps that computed it.
    job
        Only runs of this job (each location has its pipeline job; the UI lists them).
    level
        This level and above: DEBUG, INFO, WARNING, ERROR, CRITICAL.
    since
        Only entries of the last 30m, 1h, 2d, 1h30m ...
    run_id
        Only this run: its id or a unique prefix of it.
    backfill
        Only runs of this backfill.
    follow
        Keep printing new entries (of runs started later too) until Ctrl-C.
    full
        Do not fit lines to the terminal; show multi-line messages and stack traces whole.
    as_json
        One JSON object a line (timestamp, level, run_id, job, step, asset, event_type,
        message, fields, stack).
    limit
        At most this many entries (the newest), before --follow goes on.
    """
    from phlo_cli.render import log_line
    from phlo_core.runlogs.model import (
        LogEntry,
        LogFilter,
        LogsError,
        NoInstanceError,
        parse_level,
        parse_since,
    )
    from phlo_core.runlogs.read import follow as follow_entries
    from phlo_core.runlogs.read import read_entries, resolve_run_id
    from phlo_core.runlogs.stores import open_logs

    if not 1 <= limit <= MAX_LOG_LIMIT:
        raise UsageError(f"--limit must be between 1 and {MAX_LOG_LIMIT:,}")
    settings = command_settings(writes=False)
    try:
        threshold = parse_level(level)
        after = parse_since(since) if since is not None else None
        source = open_logs(settings)
        run_ids = [resolve_run_id(source, run_id)] if run_id is not None else None
        if asset is not None and not source.has_asset(asset):
            raise LogsError(f"no run in this instance has touched an asset named {asset!r}")
    except LogsError as exc:
        raise UsageError(str(exc)) from None
    except NoInstanceError as exc:
        err(str(exc) + demo_hint(settings, "logs"))
        return EXIT_FAILED
    logs_filter = LogFilter(
        run_ids=run_ids,
        job=job,
        asset=asset,
        level=threshold,
        since=after,
        backfill=backfill,
        limit=limit,
    )
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR") and not as_json
    width = None if full or not sys.stdout.isatty() else os.get_terminal_size().columns

    def show(entry: LogEntry) -> None:
        import json

        if as_json:
            print(json.dumps(entry.as_json(), default=str), flush=follow)
        else:
            print(log_line(entry, width=width, full=full, colour=colour), flush=follow)

    if follow:
        try:
            for entry in follow_entries(source, logs_filter):
                show(entry)
        except KeyboardInterrupt:
            return 0
    found = read_entries(source, logs_filter)
    for entry in found:
        show(entry)
    if not found and not as_json:
        read_nothing(settings, "no entries match", "logs")
    return 0
