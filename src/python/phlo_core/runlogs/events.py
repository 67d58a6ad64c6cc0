"""A stored Dagster event (its JSON, as every storage keeps it) as a log entry: the step's own
log line, a run's start and end, a step's failure with its error, a materialization with its
metadata, a check's result."""

from __future__ import annotations

import json
from typing import Any

from phlo_core.runlogs.model import CHECK_EVENT, EVENT_LEVELS, LEVELS, LogEntry


def _path(key: Any) -> str | None:
    """An asset key as stored ({"path": [...]}) as its user string."""
    parts = key.get("path") if isinstance(key, dict) else None
    return "/".join(str(part) for part in parts) if isinstance(parts, list) else None


def _metadata_value(value: Any) -> Any:
    """A stored metadata value as plain JSON data."""
    if not isinstance(value, dict):
        return value
    for name in ("value", "md_str", "text", "path", "url", "data", "json_data"):
        if name in value:
            inner = value[name]
            plain = isinstance(inner, str | int | float | bool) or inner is None
            return inner if plain else str(inner)
    return str({k: v for k, v in value.items() if k != "__class__"})


def _metadata(data: dict[str, Any]) -> dict[str, Any]:
    """Metadata as stored: a dict of values, or Dagster's older list of labelled entries."""
    if isinstance(data.get("metadata"), dict):
        return {k: _metadata_value(v) for k, v in data["metadata"].items()}
    entries = data.get("metadata_entries") or []
    return {
        str(e.get("label")): _metadata_value(e.get("entry_data"))
        for e in entries
        if isinstance(e, dict)
    }


def _error_text(error: Any) -> str:
    """A stored error with its stack and causes, as Dagster prints it."""
    if not isinstance(error, dict):
        return ""
    stack = "".join(error.get("stack") or [])
    text = str(error.get("message") or "") + (f"\nStack Trace:\n{stack}" if stack else "")
    if error.get("cause"):
        text += "\nThe above exception was caused by the following exception:\n"
        text += _error_text(error["cause"])
    if error.get("context"):
        text += "\nThe above exception occurred during handling of the following exception:\n"
        text += _error_text(error["context"])
    return text


def _failure_line(data: dict[str, Any]) -> str:
    """The root cause's first line, without Dagster's wrapping and module paths (as
    `phlo materialize` reports a failed step)."""
    user = data.get("user_failure_data") or {}
    if isinstance(user, dict) and user.get("description"):
        return str(user["description"]).strip().splitlines()[0]
    error = data.get("error")
    while isinstance(error, dict) and isinstance(error.get("cause"), dict):
        error = error["cause"]
    if not isinstance(error, dict):
        return "step failed"
    lines = str(error.get("message") or "").strip().splitlines()
    lines = lines or [str(error.get("cls_name") or "error")]
    kind, _, text = lines[0].partition(": ")
    return text if text and "." in kind and " " not in kind else lines[0]


def event_entry(row: tuple[Any, ...], job: str) -> LogEntry:
    """An entry from a stored event (its JSON read directly: no Dagster needed)."""
    from phlo_core.redact import redact

    storage_id, text, event_type = row[0], row[1], row[2]
    record = json.loads(text)
    event = record.get("dagster_event")
    stored = record.get("level")
    stored = stored if isinstance(stored, int) else LEVELS.get(str(stored).upper(), 20)
    level = stored if event is None else EVENT_LEVELS.get(event_type or "", stored)
    message = str(record.get("user_message") or "")
    fields: dict[str, Any] = {}
    stack = None
    asset = None
    if event is None:
        from phlo_core.log import parse_fields

        message, fields = parse_fields(message)
    else:
        data = event.get("event_specific_data") or {}
        message = str(event.get("message") or message)
        if event_type == "ASSET_MATERIALIZATION":
            materialization = data.get("materialization") or {}
            asset = _path(materialization.get("asset_key"))
            fields = _metadata(materialization)
            if materialization.get("partition"):
                fields["partition"] = materialization["partition"]
            message = str(fields.pop("summary", "")) or f"materialized {asset}"
        elif event_type == CHECK_EVENT:
            passed = bool(data.get("success", True))
            asset = _path(data.get("asset_key"))
            name = str(data.get("check_name") or "check")
            level = LEVELS["INFO"] if passed else LEVELS["WARNING"]
            fields = {"check": name, "passed": passed, **_metadata(data)}
            message = f"check {name} {'passed' if passed else 'FAILED'}"
        elif event_type == "STEP_FAILURE":
            message = _failure_line(data)
            stack = _error_text(data.get("error")) or None
        elif event_type == "PIPELINE_FAILURE":
            stack = _error_text(record.get("error_info") or data.get("error")) or None
    return LogEntry(
        storage_id=int(storage_id),
        timestamp=float(record.get("timestamp") or 0.0),
        level=level,
        run_id=str(record.get("run_id") or ""),
        job=job,
        step=record.get("step_key"),
        asset=asset,
        event_type=event_type,
        message=redact(message),
        fields=fields,
        stack=redact(stack) if stack else None,
    )
