"""Lakehouse housekeeping: DuckLake keeps every snapshot and every superseded file until told.

Each run replaces partitions (delete + insert), so snapshots, small files and files only old
snapshots reference pile up. `maintain` folds rows inlined in the catalog into Parquet, merges
small adjacent files, rewrites files that are mostly deleted rows, expires snapshots older
than the retention (time travel reaches back that far), deletes the files nothing references
any more, and removes orphaned files a killed writer left (older than an hour, so that a
writer in flight elsewhere is never touched). It has the lakehouse to itself: it holds the
writer lock and waits for dbt's builds to finish (`locks.lakehouse_maintenance`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from phlo_core.lakehouse.connect import CATALOG, lakehouse, retrying
from phlo_core.lakehouse.locks import lakehouse_maintenance
from phlo_core.settings import PhloSettings


@dataclass(frozen=True)
class MaintenanceReport:
    retention_days: int
    rows_flushed: int
    files_merged: int
    files_rewritten: int
    snapshots_expired: int
    snapshots_kept: int
    files_deleted: int
    orphans_deleted: int
    seconds: float

    def summary(self) -> str:
        return (
            f"expired {self.snapshots_expired} snapshot(s) older than {self.retention_days} "
            f"day(s) ({self.snapshots_kept} kept), deleted {self.files_deleted} unreferenced "
            f"and {self.orphans_deleted} orphaned file(s), merged {self.files_merged} and "
            f"rewrote {self.files_rewritten} file(s), flushed {self.rows_flushed} inlined "
            f"row(s) in {self.seconds:.1f}s"
        )


def maintain(settings: PhloSettings, retention_days: int | None = None) -> MaintenanceReport:
    retention = settings.phlo_snapshot_retention_days if retention_days is None else retention_days
    if retention < 0:
        raise ValueError("the retention is a number of days, 0 or more")
    started = time.perf_counter()
    with lakehouse_maintenance(settings), lakehouse(settings) as con:

        def call(sql: str) -> list[tuple]:
            return retrying(lambda: con.execute(sql).fetchall())

        flushed = call(f"call ducklake_flush_inlined_data('{CATALOG}')")
        merged = call(f"call ducklake_merge_adjacent_files('{CATALOG}')")
        rewritten = call(f"call ducklake_rewrite_data_files('{CATALOG}')")
        expired = call(
            f"call ducklake_expire_snapshots('{CATALOG}', "
            f"older_than => now() - interval '{int(retention)} days')"
        )
        deleted = call(f"call ducklake_cleanup_old_files('{CATALOG}', cleanup_all => true)")
        orphans = call(
            f"call ducklake_delete_orphaned_files('{CATALOG}', "
            "older_than => now() - interval '1 hour')"
        )
        kept = call(f"select count(*) from ducklake_snapshots('{CATALOG}')")
    return MaintenanceReport(
        retention_days=retention,
        rows_flushed=sum(int(row[2] or 0) for row in flushed),
        files_merged=sum(int(row[2] or 0) for row in merged),
        files_rewritten=sum(int(row[2] or 0) for row in rewritten),
        snapshots_expired=len(expired),
        snapshots_kept=int(kept[0][0]),
        files_deleted=len(deleted),
        orphans_deleted=len(orphans),
        seconds=time.perf_counter() - started,
    )
