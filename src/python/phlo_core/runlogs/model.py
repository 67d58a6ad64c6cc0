"""What `phlo logs` reads and shows: a log entry, the filter a command asks for (run, job,
asset, level, time, backfill), the levels of the events shown, and parsing --since/--level."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


LEVEL_NAMES = {number: name for name, number in LEVELS.items()}


BACKFILL_TAG = "dagster/backfill"


# The events shown, with the level each is shown at (check evaluations: WARNING when failed).
EVENT_LEVELS = {
    "PIPELINE_START": 20,
    "PIPELINE_SUCCESS": 20,
    "PIPELINE_FAILURE": 40,
    "PIPELINE_CANCELED": 30,
    "STEP_FAILURE": 40,
    "ASSET_MATERIALIZATION": 20,
    "ASSET_CHECK_EVALUATION": 20,
}


CHECK_EVENT = "ASSET_CHECK_EVALUATION"


class LogsError(ValueError):
    """Bad input to `phlo logs` (an unknown run, a malformed --since): a usage error."""


class NoInstanceError(RuntimeError):
    """There is no Dagster instance where the settings point, or it cannot be read."""


class InstanceNotCreatedError(NoInstanceError):
    """Nothing was ever run with these settings: there is no instance to read yet."""


@dataclass(frozen=True)
class LogFilter:
    run_ids: Sequence[str] | None = None
    job: str | None = None
    asset: str | None = None
    level: int = LEVELS["DEBUG"]
    since: dt.datetime | None = None  # aware
    backfill: str | None = None
    limit: int = 100
    with_unfinished: bool = False  # also runs still going that were updated before `since`


@dataclass(frozen=True)
class LogEntry:
    storage_id: int
    timestamp: float
    level: int
    run_id: str
    job: str
    step: str | None
    asset: str | None
    event_type: str | None  # None for a log line
    message: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    stack: str | None = None

    @property
    def level_name(self) -> str:
        return LEVEL_NAMES.get(self.level, str(self.level))

    def as_json(self) -> dict[str, Any]:
        return {
            "timestamp": dt.datetime.fromtimestamp(self.timestamp, dt.UTC).isoformat(),
            "level": self.level_name,
            "run_id": self.run_id,
            "job": self.job,
            "step": self.step,
            "asset": self.asset,
            "event_type": self.event_type or "LOG",
            "message": self.message,
            "fields": dict(self.fields),
            **({"stack": self.stack} if self.stack else {}),
        }


_SINCE = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """`30m`, `1h`, `2d`, `1h30m` before now (UTC)."""
    match = _SINCE.fullmatch(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise LogsError(f"--since {text!r} is not a duration: use e.g. 30m, 1h, 2d or 1h30m")
    days, hours, minutes, seconds = (int(group or 0) for group in match.groups())
    try:
        span = dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        return (now or dt.datetime.now(dt.UTC)) - span
    except OverflowError:
        raise LogsError(f"--since {text!r} reaches before the year 1: no run is that old") from None


def parse_level(text: str) -> int:
    name = text.strip().upper()
    level = LEVELS.get("WARNING" if name == "WARN" else name)
    if level is None:
        raise LogsError(f"--level {text!r} is not one of {', '.join(LEVELS)}")
    return level


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    job: str
    updated: float  # when the run's status last changed, epoch seconds
