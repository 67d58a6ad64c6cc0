"""A source that suddenly answers far less for a day that held data must not replace it silently.

A misconfigured site, a pruned database or a wrong token that yields an empty answer all look
like "this day now has no readings". The ingestion building block compares what a run would
leave for each day with what the day holds, inside the write transaction, and stops the write
when a day would lose more than PHLO_MAX_SHRINK_PCT of its rows, unless forced
(PHLO_ALLOW_SHRINK, `phlo materialize --allow-shrink`, or the run tag below from the UI).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

# A run tag that forces a shrinking write for that run (set by `--allow-shrink`).
ALLOW_SHRINK_TAG = "phlo/allow_shrink"
FORCE_HINT = "re-run with --allow-shrink (or set PHLO_ALLOW_SHRINK=true) if the source is right"


@dataclass(frozen=True)
class Shrink:
    day: dt.date
    stored: int
    incoming: int


class ShrinkError(RuntimeError):
    """A write would shrink days beyond the limit; the message names them and how to force."""

    def __init__(self, table: str, shrinks: list[Shrink], max_shrink_pct: float) -> None:
        self.shrinks = shrinks
        days = ", ".join(
            f"{s.day} held {s.stored} rows and would keep {s.incoming}" for s in shrinks[:5]
        )
        more = f" (and {len(shrinks) - 5} more days)" if len(shrinks) > 5 else ""
        super().__init__(
            f"{table}: {days}{more}, a loss of more than {max_shrink_pct:g}% "
            f"(PHLO_MAX_SHRINK_PCT); nothing was written: {FORCE_HINT}"
        )


def shrinking_days(
    stored: Mapping[dt.date, int], incoming: Mapping[dt.date, int], max_shrink_pct: float
) -> list[Shrink]:
    """Days that held rows and would lose more than `max_shrink_pct` percent of them."""
    keep = 1 - max_shrink_pct / 100
    return [
        Shrink(day, held, incoming.get(day, 0))
        for day, held in sorted(stored.items())
        if held > 0 and incoming.get(day, 0) < held * keep
    ]
