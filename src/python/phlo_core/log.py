"""Structured logging for phlo's own code: key-value events through structlog.

    log = get_logger(__name__)
    log.info("fetched", source="the source", days="2024-01-01", rows=288, pages=1)

Each event becomes one line on the standard `logging` logger of its module (under `phlo`):
`fetched source="the source" days=2024-01-01 rows=288 pages=1`, every value redacted first (URL
credentials, passwords in connection strings: `phlo_core.redact`). Inside a Dagster run the
instance captures the `phlo` loggers (`python_logs.managed_python_loggers` in dagster.yaml), so
the lines and their fields are in the run's event log, in the UI and in `phlo logs`, which
reads the fields back (`parse_fields`). Outside runs they go wherever `logging` sends them (the
CLI shows warnings on stderr).
"""

from __future__ import annotations

import json
import re
from collections.abc import MutableMapping
from typing import Any

from phlo_core.redact import redact

ROOT = "phlo"
_configured = False
# A value is bare when made of these; anything else is written as a JSON string.
_BARE = r"[\w.:/@*+\-]+"
_PAIR = re.compile(rf' ([a-z_][a-z0-9_]*)=("(?:[^"\\]|\\.)*"|{_BARE})')
_PAIRS = re.compile(rf'(?: [a-z_][a-z0-9_]*=(?:"(?:[^"\\]|\\.)*"|{_BARE}))+')


def _value(value: Any) -> str:
    text = redact(value if isinstance(value, str) else json.dumps(value, default=str))
    if isinstance(value, str) and not re.fullmatch(_BARE, text):
        return json.dumps(text)
    return text


def render(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    """`message key=value ...`: the message first, values redacted, quoted when they must be."""
    message = redact(str(event.pop("event", "")))
    event.pop("level", None)
    pairs = "".join(f" {key}={_value(value)}" for key, value in event.items())
    return f"{message}{pairs}"


def parse_fields(line: str) -> tuple[str, dict[str, Any]]:
    """A rendered line back into (message, fields): the pairs are the longest tail made only of
    `key=value` pairs; a line without such a tail is all message."""
    for match in _PAIR.finditer(line):
        if _PAIRS.fullmatch(line, match.start()):
            fields: dict[str, Any] = {}
            for key, raw in _PAIR.findall(line[match.start() :]):
                try:
                    fields[key] = json.loads(raw)
                except ValueError:
                    fields[key] = raw
            return line[: match.start()], fields
    return line, {}


def configure() -> None:
    global _configured
    if _configured:
        return
    import structlog  # here, not at the top: `phlo logs` reads fields back without it

    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, render],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    _configured = True


def get_logger(name: str) -> Any:
    """A structlog logger writing to the `logging` logger `phlo.<module>`."""
    import structlog

    configure()
    short = name.split(".", 1)[-1] if name.startswith(("phlo_core.", "locations.")) else name
    return structlog.get_logger(f"{ROOT}.{short}")
