"""`phlo query`: read-only SQL on the lakehouse, in a sandbox."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from cyclopts import Parameter

from phlo_cli.common import (
    EXIT_FAILED,
    UsageError,
    command_settings,
    err,
    terminal_width,
)

if TYPE_CHECKING:  # for annotations only: these modules load inside the commands
    pass


def query(
    sql: str | None = None,
    /,
    *,
    file: Annotated[Path | None, Parameter(name=["--file", "-f"])] = None,
    output_format: Annotated[Literal["table", "json", "csv"], Parameter(name="--format")] = "table",
) -> int:
    """Run a read-only SQL query against the lakehouse, in a sandbox.

    Tables are addressed by layer and name (`show all tables` lists them). Only one SELECT,
    DESCRIBE, SHOW or SUMMARIZE statement runs; anything that would write, attach, load,
    change settings or read files outside the lake is refused (exit 2). Memory and time are
    limited by PHLO_QUERY_MEMORY_LIMIT_MB and PHLO_QUERY_TIMEOUT_SECONDS.

    Parameters
    ----------
    sql
        One SQL statement, e.g. "select * from duckdb_tables()". `-` reads it from stdin.
    file
        Read the SQL from this file (`-` for stdin) instead.
    output_format
        table (aligned text), json (an array of row objects) or csv.
    """
    from phlo_cli.render import render
    from phlo_core.lakehouse.connect import LakehouseError, QueryError
    from phlo_core.lakehouse.sandbox import QueryLimitError, QueryRefusedError, run_query

    text = _sql_text(sql, file)
    settings = command_settings(writes=False)
    try:
        result = run_query(text, settings)
    except QueryRefusedError as exc:
        raise UsageError(f"query refused: {exc}") from None
    except QueryError as exc:
        raise UsageError(f"query failed: {exc}") from None
    except (LakehouseError, QueryLimitError) as exc:
        err(str(exc))
        return EXIT_FAILED
    width = terminal_width() if sys.stdout.isatty() else None  # a file or a pipe gets it whole
    print(render(output_format, result.columns, result.rows, width))
    return 0


def _sql_text(sql: str | None, file: Path | None) -> str:
    if (sql is None) == (file is None):
        raise UsageError("give the SQL as an argument or with --file (`-` reads stdin), not both")
    if file is not None and str(file) != "-":
        try:
            return file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise UsageError(f"cannot read SQL file {file}: {reason}") from None
    if sql == "-" or file is not None:
        return sys.stdin.read()
    return sql or ""
