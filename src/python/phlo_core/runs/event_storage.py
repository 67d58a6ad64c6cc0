"""Dagster's SQLite event log, with its connections kept open.

Dagster's `SqliteEventLogStorage` builds a new SQLAlchemy engine, opens a connection and
disposes of both for every statement; a run writes an event for every planned and finished
materialization of every partition, each to its run's database and again to the index, so a
31-day run of a dbt project opened about 2,000 connections: 35% of the run's time. This class
keeps one engine (and its pooled connection) per database for the life of the process, the
most recently used ones only, and otherwise is Dagster's storage: same files, same schema,
same locking. The embedded default's dagster.yaml names it (`phlo_core.runs.instance`).

It also stores a step's asset events as one batch: a run over a range of days records a
materialization per day and asset, each an insert into the run's database and another into the
index with its tags, two transactions apiece. Dagster hands such events over in batches when
DAGSTER_EVENT_BATCH_SIZE is set (its storages then loop over them); this class sets it when
unset and writes a batch in one transaction per database. A run's planned checks come in one
such batch with its planned materializations (a day of the largest location here: 81 checks,
three transactions each, 0.5 s), and are written in it too, by Dagster's own code.

Dagster asks whether the index holds the asset-check table before storing every check event,
with a new connection each time; a table that exists is remembered here.

Commits are not flushed to disk one by one (`PRAGMA synchronous=NORMAL`, on databases in WAL
mode, which Dagster puts every one of them in): a day of the largest location stores about 225
events one at a time, and waiting for the disk on each commit was half their time (0.6 s ->
0.3 s a day). A process killed loses nothing committed; what a power cut or a crash of the
machine can lose is the last commits before it, never the database's consistency, and what the
run wrote to the lakehouse is committed there on its own terms. (SQLite's documentation
recommends this pairing for WAL.)

A new run's database is a copy of an empty one made by Dagster's own code once per Dagster
version (`.phlo-run-template-VERSION.sqlite`, beside the runs' files): creating its tables and
stamping its schema revision with Alembic took about 90 ms a run, a copy about 1 ms.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from dagster._core.errors import DagsterInvariantViolationError
from dagster._core.events import ASSET_EVENTS, DagsterEventType
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
)
from dagster._core.storage.sqlalchemy_compat import db_result
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster.version import __version__ as dagster_version
from sqlalchemy import create_engine, text
from sqlalchemy.event import listen

if TYPE_CHECKING:
    from dagster._core.events.log import EventLogEntry
    from dagster._serdes import ConfigurableClassData
    from sqlalchemy.engine import Connection, Engine

KEEP_OPEN = 8  # databases with an open connection: the index and the latest runs'
EVENT_BATCH_SIZE = "1000"  # asset events Dagster buffers per step before storing them at once


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` with an engine per database kept open (at most KEEP_OPEN)."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._tables: set[str] = set()  # tables the index is known to hold
        self._batch = threading.local()  # `conn`: a batch's open index transaction
        os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)
        super().__init__(base_dir, inst_data)

    @classmethod
    def from_config_value(  # pyright: ignore[reportIncompatibleMethodOverride]
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> PooledSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        engine = self._engines.get(shard)
        if engine is not None:
            self._engines.move_to_end(shard)
            return engine
        if shard not in self._initialized_dbs and self._copied_template(shard):
            self._initialized_dbs.add(shard)
        engine = create_engine(
            self.conn_string_for_shard(shard),
            pool_size=1,
            max_overflow=4,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
        )
        listen(engine, "connect", _commit_without_sync_in_wal)
        if shard not in self._initialized_dbs:
            self._initdb(engine)
            self._initialized_dbs.add(shard)
        self._engines[shard] = engine
        while len(self._engines) > KEEP_OPEN:
            _, oldest = self._engines.popitem(last=False)
            oldest.dispose()
        return engine

    def _copied_template(self, shard: str) -> bool:
        """Create a new run's database as a copy of the template; False when the database
        already exists (or is the index), which Dagster's own initialization then checks."""
        path = self.path_for_shard(shard)
        if shard == INDEX_SHARD_NAME or os.path.exists(path):
            return False
        template = os.path.join(self._base_dir, f".phlo-run-template-{dagster_version}.sqlite")
        if not os.path.exists(template):
            self._make_template(template)
        partial = os.path.join(self._base_dir, f".{shard}.{os.getpid()}.tmp")
        try:
            shutil.copyfile(template, partial)
            os.link(partial, path)  # never over a database another process just created
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
        return True

    def _make_template(self, template: str) -> None:
        partial = f"{template}.{os.getpid()}.tmp"
        engine = create_engine(f"sqlite:///{partial}")
        try:
            super()._initdb(engine)
            with engine.connect() as conn:  # everything in the file itself: no WAL beside it
                conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        finally:
            engine.dispose()
        os.replace(partial, template)  # whole or not at all; a concurrent maker's is the same

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # As Dagster's: one statement at a time in this process (the lock), a transaction each.
        with self._db_lock:
            engine = self._engine(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def has_table(self, table_name: str) -> bool:
        if table_name not in self._tables and super().has_table(table_name):
            self._tables.add(table_name)
        return table_name in self._tables

    def index_connection(self) -> AbstractContextManager[Connection]:
        # Within a batch's index transaction (this thread's): that transaction, so that what
        # Dagster writes for a planned check goes in it.
        held = getattr(self._batch, "conn", None)
        return nullcontext(held) if held is not None else super().index_connection()

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """A step's asset events, or a run's planned materializations and checks (one run's):
        what `store_event` does for each, in one transaction on the index and then one on the
        run's database. Anything else: one by one.

        The index (shared by every process) comes first: if it cannot be written, nothing is,
        and Dagster's fallback (`store_event` for each) stores each event once. Only the run's
        own database, which no other process writes, could then fail after the index."""
        run_ids = {event.run_id for event in events}
        if len(run_ids) != 1 or not all(_batched(event) for event in events):
            for event in events:
                self.store_event(event)
            return
        statements = [self.prepare_insert_event(event) for event in events]
        with self.index_transaction() as conn:
            event_ids = []
            for statement in statements:
                with db_result(conn, statement) as result:
                    event_id = result.inserted_primary_key[0]
                if event_id is None:
                    raise DagsterInvariantViolationError("an asset event stored without an id")
                event_ids.append(event_id)
            stored = list(zip(events, event_ids, strict=True))
            assets = [(e, i) for e, i in stored if e.dagster_event_type in ASSET_EVENTS]
            if assets:
                self._store_asset_event_tags(conn, [e for e, _ in assets], [i for _, i in assets])
            for event, event_id in assets:
                self._store_asset_event(conn, event, event_id)
            self._batch.conn = conn
            try:
                for event, event_id in stored:
                    if event.dagster_event_type not in ASSET_EVENTS:
                        self.store_asset_check_event(event, event_id)
            finally:
                self._batch.conn = None
        with self.run_connection(run_ids.pop()) as conn:
            for statement in statements:
                conn.execute(statement)

    def _close_all(self) -> None:
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()

    def wipe(self) -> None:
        self._close_all()  # the run databases' files are deleted
        self._tables.clear()
        super().wipe()

    def dispose(self) -> None:
        self._close_all()
        super().dispose()


def _commit_without_sync_in_wal(dbapi_connection: Any, _record: Any) -> None:
    """A connection's commits written to the WAL without waiting for the disk, in WAL mode
    only (with a rollback journal, NORMAL could leave a database corrupt after a power cut)."""
    cursor = dbapi_connection.cursor()
    try:
        [mode] = cursor.execute("PRAGMA journal_mode").fetchone()
        if str(mode).lower() == "wal":
            cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _batched(event: EventLogEntry) -> bool:
    """An asset event (with its asset) or a planned check: what a batch here stores."""
    dagster_event = event.dagster_event
    if dagster_event is None:
        return False
    if event.dagster_event_type == DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED:
        return True
    return event.dagster_event_type in ASSET_EVENTS and dagster_event.asset_key is not None
