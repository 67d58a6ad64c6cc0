"""Writes into the lakehouse: a day's rows (or a place's) replace that partition in one
transaction, keyed, so a failed write leaves the table as it was; commit conflicts with
another writer are retried."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from phlo_core.lakehouse.locks import lakehouse_writer
from phlo_core.settings import PhloSettings, get_settings

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import pyarrow as pa

    from phlo_core.calendar import DayRange
from phlo_core.lakehouse.connect import CATALOG, lakehouse, retrying


@dataclass(frozen=True)
class PartitionWrite:
    """Replace the rows of `table` whose `partition_column` lies in [start, end) with `rows`,
    and, with `keys` (column -> the values the run fetched), only the rows of those values:
    a location that fetches its days per place replaces those places' rows, and a place no
    longer configured (or misspelt) keeps its days. Every row written must lie in what is
    replaced, or running the days again would duplicate it.

    `columns` is the table's contract (name -> DuckDB type), applied when the table is created
    and used to select from `rows`, so an empty day still has a typed table.
    """

    table: str
    columns: Mapping[str, str]
    partition_column: str
    start: dt.date
    end: dt.date
    rows: pa.Table
    keys: Mapping[str, Sequence[object]] = field(default_factory=dict)

    @classmethod
    def of_days(
        cls,
        table: str,
        columns: Mapping[str, str],
        days: DayRange,
        frame: pd.DataFrame,
        partition_column: str = "partition_date",
        keys: Mapping[str, Sequence[object]] | None = None,
    ) -> PartitionWrite:
        """The days' rows of `table`, given as a pandas frame."""
        import pyarrow

        rows = pyarrow.Table.from_pandas(frame, preserve_index=False)
        return cls(table, columns, partition_column, days.start, days.end, rows, keys or {})

    @property
    def target(self) -> str:
        return f"{CATALOG}.{self.table}"

    @property
    def label(self) -> str:
        """The table and, when keyed, what of it the write covers (for messages)."""
        scope = "; ".join(
            f"{column} {', '.join(str(v) for v in values)}" for column, values in self.keys.items()
        )
        return f"{self.table} ({scope})" if scope else self.table

    def scope(self) -> tuple[str, list[object]]:
        """A predicate (SQL, parameters) true for exactly the rows this write replaces."""
        terms = [f"{self.partition_column} >= ?", f"{self.partition_column} < ?"]
        params: list[object] = [self.start, self.end]
        for column, values in self.keys.items():
            terms.append(f"{column} in ({', '.join('?' * len(values))})" if values else "false")
            params.extend(values)
        return " and ".join(terms), params


def replace_partitions(
    writes: Sequence[PartitionWrite],
    settings: PhloSettings | None = None,
    *,
    guard: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
) -> dict[str, int]:
    """Apply every write in ONE transaction (one DuckLake snapshot), retried whole on conflicts.

    Either all tables get their new rows for the window or none changes; each write deletes
    its scope only (`PartitionWrite.scope`). `guard` runs inside the transaction once the
    tables exist and before anything is deleted, so it sees exactly what the write replaces;
    an exception from it rolls everything back. Returns rows written per table.
    """
    settings = settings or get_settings()
    with lakehouse_writer(settings), lakehouse(settings) as con:

        def transaction() -> dict[str, int]:
            written: dict[str, int] = {}
            con.execute("begin transaction")
            try:
                for write in writes:
                    ddl = ", ".join(f"{name} {kind}" for name, kind in write.columns.items())
                    con.execute(f"create table if not exists {write.target} ({ddl})")
                if guard is not None:
                    guard(con)
                for i, write in enumerate(writes):
                    written[write.table] = _replace(con, write, f"_phlo_rows_{i}")
                con.execute("commit")
            except BaseException:
                with suppress(Exception):  # the error that matters is the one being raised
                    con.execute("rollback")
                raise
            return written

        return retrying(transaction)


def _replace(con: duckdb.DuckDBPyConnection, write: PartitionWrite, view: str) -> int:
    where, params = write.scope()
    casts = ", ".join(f"cast({name} as {kind}) as {name}" for name, kind in write.columns.items())
    con.register(view, write.rows)
    try:
        typed = f"(select {casts} from {view})"
        outside = con.execute(
            f"select count(*) from {typed} where ({where}) is not true", params
        ).fetchone()
        if outside and outside[0]:
            raise ValueError(
                f"{write.label}: {outside[0]} row(s) to write lie outside the days (and keys) "
                "the write replaces"
            )
        con.execute(f"delete from {write.target} where {where}", params)
        names = ", ".join(write.columns)
        con.execute(f"insert into {write.target} ({names}) select * from {typed}")
    finally:
        con.unregister(view)
    return write.rows.num_rows
