"""The filters of `phlo logs` as SQL on Dagster's event log (SQLite or PostgreSQL): a WHERE
clause and a LIMIT per run, newest first, with every value a bound parameter."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from phlo_core.runlogs.model import CHECK_EVENT, EVENT_LEVELS, LEVELS, LogFilter

_SHOWN_TYPES = ", ".join(f"'{name}'" for name in EVENT_LEVELS)


def utc_text(moment: dt.datetime) -> str:
    """A moment as Dagster's SQLite storages write timestamps (UTC, no zone)."""
    return moment.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _json(path: str, dialect: str) -> str:
    """SQL for a value inside the serialized event (`level`, `dagster_event.x.y`) as text or
    number, in the storage's dialect."""
    if dialect == "postgresql":
        return f"(event::jsonb #>> '{{{path.replace('.', ',')}}}')"
    return f"json_extract(event, '$.{path}')"


def _level(dialect: str) -> str:
    """SQL for a log line's stored level. In PostgreSQL the number is read after the first
    `"level": ` of the text (a log line's only such key: nested objects are errors, and quotes
    inside strings are escaped), 3x cheaper than parsing the JSON; JSON when it is missing."""
    if dialect != "postgresql":
        return f"cast({_json('level', dialect)} as integer)"
    at = "strpos(event, '\"level\": ')"
    number = f"substring(substr(event, {at} + 9, 12) from '^-?[0-9]+')"
    return f"cast(case when {at} > 0 then {number} else event::json ->> 'level' end as integer)"


def where_clause(
    logs: LogFilter, after: str | None, dialect: str, run: str = ":run_id"
) -> tuple[str, dict[str, Any]]:
    """The WHERE clause for one run's events: `run` and `after` are SQL for the run id and
    the storage id to read after (if any)."""
    clauses = [f"(dagster_event_type is null or dagster_event_type in ({_SHOWN_TYPES}))"]
    params: dict[str, Any] = {}
    if logs.since is not None:
        clauses.append("timestamp >= :since")
        params["since"] = utc_text(logs.since)
    if after is not None:
        clauses.append(f"id > {after}")
    if logs.asset is not None:
        # Its materializations, its checks, and the log lines and failures of the steps that
        # computed it (a dbt step computes many models: its lines show for each).
        check_asset = _json("dagster_event.event_specific_data.asset_key.path", dialect)
        if dialect == "postgresql":
            check_asset = (
                "(event::jsonb #> '{dagster_event,event_specific_data,asset_key,path}')::text"
            )
        clauses.append(
            "((dagster_event_type = 'ASSET_MATERIALIZATION' and asset_key = :asset_key)"
            f" or (dagster_event_type = '{CHECK_EVENT}' and {check_asset} = :asset_path)"
            " or ((dagster_event_type is null or dagster_event_type = 'STEP_FAILURE')"
            f" and step_key in (select step_key from event_logs where run_id = {run}"
            " and asset_key = :asset_key and step_key is not null)))"
        )
        params["asset_key"] = json.dumps([logs.asset])
        params["asset_path"] = json.dumps(
            [logs.asset], separators=(",", ":") if dialect != "postgresql" else (", ", ": ")
        )
    if logs.level > LEVELS["DEBUG"]:
        fixed = [name for name, level in EVENT_LEVELS.items() if level >= logs.level]
        ors = [f"(dagster_event_type is null and {_level(dialect)} >= :level)"]
        if fixed:
            ors.append(f"dagster_event_type in ({', '.join(repr(name) for name in fixed)})")
        if logs.level <= LEVELS["WARNING"]:
            failed = _json("dagster_event.event_specific_data.success", dialect)
            false = "'false'" if dialect == "postgresql" else "0"
            ors.append(f"(dagster_event_type = '{CHECK_EVENT}' and {failed} = {false})")
        clauses.append(f"({' or '.join(ors)})")
        params["level"] = logs.level
    return " and ".join(clauses), params


def select_events(
    logs: LogFilter, after: int | None, limit: int, dialect: str
) -> tuple[str, dict[str, Any]]:
    """The newest `limit` matching events of one run (:run_id)."""
    where, params = where_clause(logs, None if after is None else ":after", dialect)
    if after is not None:
        params["after"] = after
    sql = (
        "select id, event, dagster_event_type from event_logs "
        f"where run_id = :run_id and {where} order by id desc limit {int(limit)}"
    )
    return sql, params
