"""`phlo query`: user SQL against the lakehouse in a sandbox.

What the sandbox promises (DESIGN.md): the catalog is attached read-only and nothing else can
be attached, no file is written, no extension installed or loaded, the configuration is locked,
only the lake's own data files can be read, and memory and time are limited.

How, in layers, because no single DuckDB setting covers it all:
- one statement, of a reading kind (SELECT, DESCRIBE, SHOW, SUMMARIZE); anything else (ATTACH,
  COPY, SET, INSTALL, a second statement) is refused before it runs;
- its syntax tree may only call table functions that read (an allow-list), and may not name
  the catalog's own metadata database: the sqlite scanner, loaded for the catalog, reads any
  file through SQLite's own I/O, past DuckDB's file checks;
- then the connection is locked down (external access off, file access limited to the lake's
  data folder, configuration locked) BEFORE anything binds the statement: binding opens what it
  names (a Parquet footer, an HTTP HEAD and ranged GET), and a URL can be a request that deletes
  (a SeaweedFS master's /col/delete). Every refusal of a path or URL reads the same, whether
  it exists or not;
- its bound plan may only scan what a lakehouse query scans (an allow-list of scan operators):
  views such as `pg_settings` hide table functions that the syntax tree does not show;
- in a child process the parent watches: DuckDB's memory limit does not cover the planner
  (a 20,000-way UNION ALL grew past 6 GB and ignored an interrupt for 40 s), so the parent kills
  the child when its resident memory or its wall time passes the limits.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from phlo_core.lakehouse.connect import (
    LakehouseError,
    QueryError,
    QueryResult,
    check_catalog,
    first_line,
    lakehouse,
    sql_literal,
)
from phlo_core.settings import PhloSettings

if TYPE_CHECKING:
    import duckdb

READING_STATEMENTS = "one SELECT, DESCRIBE, SHOW or SUMMARIZE statement"
# Table functions a query may call: they compute, or read the catalog, or read files that the
# allowed-directories setting confines to the lake's data folder.
ALLOWED_TABLE_FUNCTIONS = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "read_parquet",
        "parquet_scan",
        "parquet_metadata",
        "parquet_schema",
        "parquet_file_metadata",
        "parquet_kv_metadata",
        "glob",
        "ducklake_snapshots",
        "ducklake_table_info",
        "ducklake_table_changes",
        "ducklake_table_insertions",
        "ducklake_table_deletions",
        "ducklake_list_files",
        "ducklake_current_snapshot",
        "duckdb_columns",
        "duckdb_constraints",
        "duckdb_functions",
        "duckdb_indexes",
        "duckdb_keywords",
        "duckdb_schemas",
        "duckdb_tables",
        "duckdb_types",
        "duckdb_views",
        "summary",
    }
)
# Leaf operators of a bound plan a query may have: lake tables, constants, CTEs and the table
# functions above. Anything else (SQLITE_SCAN of the catalog's metadata, DUCKDB_SETTINGS behind
# `pg_settings`, ...) is refused.
ALLOWED_SCANS = frozenset(
    {
        "DUCKLAKE_SCAN",
        "DUMMY_SCAN",
        "COLUMN_DATA_SCAN",
        "EMPTY_RESULT",
        "CTE_SCAN",
        "REC_CTE_SCAN",
        "RECURSIVE_CTE_SCAN",
        "DELIM_SCAN",
        "CHUNK_SCAN",
        "EXPRESSION_SCAN",
        "PARQUET_SCAN",
        *(name.upper() for name in ALLOWED_TABLE_FUNCTIONS),
    }
)
OUTSIDE_THE_LAKE = (
    "not allowed: phlo query reads the lake's own tables and files only "
    "(no other files or URLs, no settings, no extensions)"
)
_METADATA_PREFIX = "__ducklake_metadata"
_POLL_SECONDS = 0.05


class QueryRefusedError(QueryError):
    """The statement is not something a read-only query may do."""


class QueryLimitError(RuntimeError):
    """The query passed the memory or time limit and was stopped."""


def _table_functions_and_paths(node: Any) -> Iterator[tuple[str, str]]:
    """('function', name) for every table function and ('path', name) for every table named by
    something that looks like a file, anywhere in a serialized syntax tree."""
    if isinstance(node, dict):
        if node.get("type") == "TABLE_FUNCTION":
            function = node.get("function") or {}
            yield "function", str(function.get("function_name", "")).lower()
        elif node.get("type") == "BASE_TABLE":
            name = str(node.get("table_name", ""))
            if any(mark in name for mark in ("/", "\\", ".", ":")):
                yield "path", name
            for part in (node.get("catalog_name"), node.get("schema_name")):
                if str(part or "").lower().startswith(_METADATA_PREFIX):
                    yield "metadata", str(part)
        for value in node.values():
            yield from _table_functions_and_paths(value)
    elif isinstance(node, list):
        for item in node:
            yield from _table_functions_and_paths(item)


def check_statement(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise QueryRefusedError unless `sql` is one reading statement that only reads the lake."""
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(first_line(exc)) from None
    if not statements:
        raise QueryRefusedError("no SQL statement given")
    if len(statements) > 1:
        raise QueryRefusedError(
            f"{len(statements)} statements given: phlo query runs {READING_STATEMENTS}"
        )
    kind = statements[0].type.name.lower().replace("_", " ")
    if statements[0].type != duckdb.StatementType.SELECT:
        raise QueryRefusedError(
            f"{kind.upper()} is not allowed: phlo query is read-only ({READING_STATEMENTS})"
        )
    # A literal, not a parameter: a prepared parameter here costs about a second.
    row = con.execute(f"select json_serialize_sql({sql_literal(sql)})").fetchone()
    tree = json.loads(row[0]) if row else {"error": True}
    if tree.get("error"):
        raise QueryRefusedError(
            f"this statement is not allowed: phlo query runs {READING_STATEMENTS}"
        )
    for what, name in _table_functions_and_paths(tree["statements"]):
        if what == "function" and name not in ALLOWED_TABLE_FUNCTIONS:
            raise QueryRefusedError(
                f"table function {name}() is not allowed: phlo query reads the lake's tables only"
            )
        if what == "path":
            raise QueryRefusedError(
                f"reading {name!r} by path is not allowed: query the lake's tables by "
                "schema and name (`show all tables` lists them)"
            )
        if what == "metadata":
            raise QueryRefusedError(
                f"{name} is the catalog's own database and is not allowed: use "
                "ducklake_snapshots('lake') or ducklake_table_info('lake') for its facts"
            )


def check_plan(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise QueryRefusedError unless the bound plan only scans what a lakehouse query scans.

    Binding opens what the statement names (files, URLs: DuckDB reads a Parquet file's footer
    to learn its columns), so this runs only once the connection is locked down."""
    for scan in _plan_leaves(con, sql):
        if scan not in ALLOWED_SCANS:
            raise QueryRefusedError(
                f"{scan.lower()} is not allowed: phlo query reads the lake's tables only"
            )


def _plan_leaves(con: duckdb.DuckDBPyConnection, sql: str) -> set[str]:
    """The operators at the leaves of the statement's bound physical plan (its scans)."""
    rows = con.execute(f"explain (format json) {sql}").fetchall()
    leaves: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            children = node.get("children") or []
            if "name" in node and not children:
                leaves.add(str(node["name"]).strip().upper())
            walk(children)

    for row in rows:
        walk(json.loads(row[-1]))
    return leaves


def _lock_down(con: duckdb.DuckDBPyConnection, settings: PhloSettings) -> None:
    duckdb_memory_mb = max(32, settings.phlo_query_memory_limit_mb * 3 // 4)
    data_path = settings.lake_data_path
    con.execute(f"set memory_limit = '{duckdb_memory_mb}MB'")
    con.execute("set temp_directory = ''")  # no spill files: a query never writes
    con.execute(f"set allowed_directories = [{sql_literal(data_path)}]")
    con.execute("set enable_external_access = false")
    con.execute("set lock_configuration = true")


def _run_in_child(sender: Connection, sql: str, settings: PhloSettings) -> None:
    """The child's side: check, lock down, run; send ('ok', columns, rows) or (kind, message)."""
    import duckdb

    try:
        with lakehouse(settings, read_only=True) as con:
            check_statement(con, sql)
            _lock_down(con, settings)
            check_plan(con, sql)
            relation = con.sql(sql)
            columns = [] if relation is None else list(relation.columns)
            rows = [] if relation is None else relation.fetchall()
        sender.send(("ok", columns, rows))
    except QueryRefusedError as exc:
        sender.send(("refused", str(exc)))
    except duckdb.PermissionException:
        # One message whatever DuckDB said: its text names the path, and whether a file outside
        # the lake exists must not show.
        sender.send(("refused", OUTSIDE_THE_LAKE))
    except duckdb.IOException as exc:
        # A pattern that matches nothing in the lake is the query's mistake (exit 2), as a
        # missing table is; other I/O errors (the bucket unreachable) are the lakehouse's.
        kind = "invalid" if "No files found" in str(exc) else "error"
        sender.send((kind, first_line(exc)))
    except duckdb.OutOfMemoryException:
        sender.send(("memory", ""))
    except (
        QueryError,
        duckdb.ParserException,
        duckdb.BinderException,
        duckdb.CatalogException,
        duckdb.InvalidInputException,
        duckdb.ConversionException,
        duckdb.NotImplementedException,
    ) as exc:
        sender.send(("invalid", first_line(exc)))
    except Exception as exc:
        sender.send(("error", first_line(exc)))
    finally:
        sender.close()


def _resident_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def run_query(sql: str, settings: PhloSettings) -> QueryResult:
    """Run user SQL in the sandbox. Raises QueryRefusedError (not allowed), QueryError (not valid),
    QueryLimitError (stopped at a limit) or LakehouseError."""
    check_catalog(settings)
    memory_limit = settings.phlo_query_memory_limit_mb * 1024 * 1024
    # Fork is quick (a spawned child re-imports everything: about 1.5 s more a query) and safe
    # while the process has one thread, as the CLI has; a library caller with threads spawns.
    method = "fork" if threading.active_count() == 1 else "spawn"
    context: Any = multiprocessing.get_context(method)
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_run_in_child, args=(sender, sql, settings), daemon=True)
    child.start()
    sender.close()
    deadline = time.monotonic() + settings.phlo_query_timeout_seconds
    message: tuple[Any, ...] | None = None
    try:
        while message is None:
            if receiver.poll(_POLL_SECONDS):
                try:
                    message = receiver.recv()
                except EOFError:
                    break
            elif not child.is_alive():
                break
            elif _resident_bytes(child.pid or 0) > memory_limit:
                raise QueryLimitError(_memory_message(settings))
            elif time.monotonic() > deadline:
                raise QueryLimitError(
                    f"the query was stopped after {settings.phlo_query_timeout_seconds:g} s "
                    "(PHLO_QUERY_TIMEOUT_SECONDS)"
                )
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receiver.close()
    if message is None:
        raise LakehouseError(f"the query process ended unexpectedly (exit code {child.exitcode})")
    kind = message[0]
    if kind == "ok":
        return QueryResult(columns=message[1], rows=message[2])
    if kind == "refused":
        raise QueryRefusedError(message[1])
    if kind == "invalid":
        raise QueryError(message[1])
    if kind == "memory":
        raise QueryLimitError(_memory_message(settings))
    raise LakehouseError(message[1])


def _memory_message(settings: PhloSettings) -> str:
    return (
        f"the query was stopped: it needed more than {settings.phlo_query_memory_limit_mb} MB "
        "(PHLO_QUERY_MEMORY_LIMIT_MB)"
    )
