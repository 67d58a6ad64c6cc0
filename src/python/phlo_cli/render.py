"""Rendering query results as an aligned text table, JSON (an array of row objects) or CSV."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import math
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from phlo_core.runlogs.model import LogEntry


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, uuid.UUID | dt.timedelta):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def to_json(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    records = [{c: _jsonable(v) for c, v in zip(columns, row, strict=True)} for row in rows]
    return json.dumps(records, indent=2, default=str)


def to_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if v is None else _jsonable(v) for v in row])
    return buffer.getvalue().rstrip("\n")


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _cell(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.2f}" if math.isfinite(value) else str(value)
    return str(_jsonable(value))


MIN_COLUMN = 8  # a column cut to fit the terminal keeps at least this much


def to_table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], width: int | None = None
) -> str:
    """An aligned text table; with `width` (a terminal's), the widest columns are cut (their
    cells end in …) until a line fits, as far as MIN_COLUMN allows: `show all tables` lists
    every column of every table in one cell."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]
    if width is not None:
        while sum(widths) + 2 * (len(widths) - 1) > width:
            widest = max(range(len(widths)), key=lambda i: widths[i])
            if widths[widest] <= MIN_COLUMN:
                break
            over = sum(widths) + 2 * (len(widths) - 1) - width
            widths[widest] = max(MIN_COLUMN, widths[widest] - over)
        cells = [[_fit(v, w) for v, w in zip(row, widths, strict=True)] for row in cells]
        columns = [_fit(c, w) for c, w in zip(columns, widths, strict=True)]
    numeric = [
        all(isinstance(row[i], int | float | decimal.Decimal) or row[i] is None for row in rows)
        and bool(rows)
        for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def render(
    fmt: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], width: int | None = None
) -> str:
    """Rows as a table (fitted to `width` when given), JSON or CSV (never cut)."""
    if fmt == "table":
        return to_table(columns, rows, width)
    return {"json": to_json, "csv": to_csv}[fmt](columns, rows)


_COLOURS = {
    "DEBUG": "\033[2m",
    "WARNING": "\033[33m",
    "ERROR": "\033[31m",
    "CRITICAL": "\033[1;31m",
}


def _field(value: object) -> str:
    """A field's value as `key=value` shows it: quoted when it has spaces, so it reads back."""
    text = str(value)
    return json.dumps(text) if not text or any(c.isspace() or c == '"' for c in text) else text


def log_line(entry: LogEntry, *, width: int | None, full: bool, colour: bool) -> str:
    """One run-log entry: local time, level, short run id, job, asset or step, message. Fitted
    to `width` unless `full` (which adds the stack of a failure below)."""
    local = dt.datetime.fromtimestamp(entry.timestamp).astimezone()
    subject = entry.asset or entry.step or "-"
    fields = dict(entry.fields)
    day = fields.pop("partition", None)  # a range run's materializations: which day each is
    if day is not None:
        subject = f"{subject} [{day}]"
    message = entry.message if full else " ".join(entry.message.split())
    shown = " ".join(f"{key}={_field(value)}" for key, value in fields.items())
    line = (
        f"{local:%Y-%m-%d %H:%M:%S} {entry.level_name:<8} {entry.run_id[:8]} {entry.job} "
        f"{subject}: {message}" + (f"  {shown}" if shown else "")
    )
    if full and entry.stack:
        line += "\n" + entry.stack.rstrip()
    if width is not None and not full and len(line) > width:
        line = line[: max(width - 1, 20)] + "…"
    tint = _COLOURS.get(entry.level_name) if colour else None
    return f"{tint}{line}\033[0m" if tint else line


def duration(seconds: float) -> str:
    """`42s`, `7m05s`, `3h02m`: how long, at a glance."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
