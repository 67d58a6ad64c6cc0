"""Run logs from the Dagster instance's own event log, filtered where the data is.

An entry is a log line a step wrote (`context.log`), or one of the events worth reading: a run
started, succeeded, failed or was canceled, a step failed (with its error), an asset was
materialized, a check was evaluated. Filters (run, job, asset, level, time, backfill) become
SQL on the event log: the run storage picks the runs, then each run's events are selected with
a WHERE clause and a LIMIT, newest first, until enough are found.

The instances phlo writes are read with plain SQL, without importing Dagster (that import alone
costs a command about 2 s here): Dagster's default SQLite layout (runs.db, one event file per
run, index.db under DAGSTER_HOME/history) from its files, read-only; Dagster's PostgreSQL
storage over one connection, many runs a statement. Any other instance (a dagster.yaml of the
user's) is read through Dagster's own storage classes. Entries are parsed from the stored event
JSON in every case, so all give the same entries (tests hold them to it).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import replace

from phlo_core.runlogs.events import event_entry
from phlo_core.runlogs.model import LogEntry, LogFilter
from phlo_core.runlogs.stores import LogSource


def resolve_run_id(source: LogSource, prefix: str) -> str:
    """The run whose id starts with `prefix` (a whole id too); LogsError if none or several."""
    return source.resolve(prefix)


def read_entries(
    source: LogSource, logs: LogFilter, *, after: Mapping[str, int] | None = None
) -> list[LogEntry]:
    """The newest `logs.limit` entries the filter matches, oldest first. `after` (run id ->
    storage id) skips what was already read, for --follow."""
    found: list[LogEntry] = []
    runs = source.runs(logs)  # the latest updated first
    jobs = {run.run_id: run.job for run in runs}
    batch = 1
    while runs:
        if len(found) >= logs.limit:
            kth = sorted((e.timestamp for e in found), reverse=True)[logs.limit - 1]
            # Runs that ended before the newest entries found cannot hold newer ones.
            runs = [run for run in runs if run.updated >= kth]
        chosen, runs = runs[:batch], runs[batch:]
        batch = min(batch * 2, 512)
        for run_id, row in source.rows_of([r.run_id for r in chosen], logs, after or {}):
            found.append(event_entry(row, jobs[run_id]))
    found.sort(key=lambda e: (e.timestamp, e.storage_id))
    return found[-logs.limit :]


def follow(source: LogSource, logs: LogFilter, *, poll_seconds: float = 1.0) -> Iterator[LogEntry]:
    """The newest entries, then every new one as it is stored (runs started later included),
    each once, until the caller stops iterating (Ctrl-C)."""
    import time

    seen: dict[str, int] = {}
    window = logs
    while True:
        polled = dt.datetime.now(dt.UTC)
        try:
            found = read_entries(source, window, after=seen)
        except sqlite3.OperationalError:  # a writer holds a file for now: the next poll reads it
            found = []
        for entry in found:
            if entry.storage_id > seen.get(entry.run_id, 0):
                seen[entry.run_id] = entry.storage_id
                yield entry
        # From now on: whatever is new since a little before this poll, however much, in runs
        # updated since then or still going. Entries already shown are skipped by storage id.
        since = polled - dt.timedelta(seconds=60)
        window = replace(
            logs,
            since=max(logs.since, since) if logs.since else since,
            limit=1_000_000,
            with_unfinished=True,
        )
        time.sleep(poll_seconds)
