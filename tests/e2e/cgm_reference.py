"""Consensus CGM measures computed independently of the dbt models, for the tests to compare the
marts with: the Glycemia Risk Index (Klonoff et al. 2023: bands that do not overlap) and the
episodes of Battelino et al. 2023 as the marts' docs state them (a reading stands for one sensor
interval; a gap between readings longer than 45 minutes ends the episode in progress).

Written as a scan over runs and groups of readings, not as the models' window functions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

EDGE_MINUTES = 15
EXTENDED_HYPO_MINUTES = 120
EXTENDED_HYPER_MINUTES = 90
EXTENDED_HYPER_WINDOW = dt.timedelta(minutes=120)
MAX_GAP = dt.timedelta(minutes=45)

KINDS: dict[str, Callable[[int], bool]] = {
    "hypo_level_1": lambda g: g < 70,
    "hypo_level_2": lambda g: g < 54,
    "hyper_level_1": lambda g: g > 180,
    "hyper_level_2": lambda g: g > 250,
}


@dataclass(frozen=True)
class Reading:
    at: dt.datetime  # UTC, aware
    glucose: int


@dataclass(frozen=True)
class Episode:
    kind: str
    start: dt.datetime
    end: dt.datetime
    recovered: bool
    reading_count: int
    nadir: int
    peak: int


def gri(values: Sequence[int]) -> dict[str, float]:
    n = len(values)

    def pct(low: float, high: float) -> float:
        return 100.0 * sum(1 for v in values if low <= v <= high) / n

    very_low, low = pct(0, 53), pct(54, 69)
    high, very_high = pct(181, 250), pct(251, 10_000)
    hypo, hyper = very_low + 0.8 * low, very_high + 0.5 * high
    return {
        "very_low_pct": very_low,
        "low_pct": low,
        "in_range_pct": pct(70, 180),
        "high_pct": high,
        "very_high_pct": very_high,
        "gri_hypo_component": hypo,
        "gri_hyper_component": hyper,
        "gri": min(100.0, 3.0 * hypo + 1.6 * hyper),
    }


def _segments(readings: Sequence[Reading]) -> list[list[Reading]]:
    segments: list[list[Reading]] = []
    for reading in sorted(readings, key=lambda r: r.at):
        if not segments or reading.at - segments[-1][-1].at > MAX_GAP:
            segments.append([])
        segments[-1].append(reading)
    return segments


def _runs(segment: list[Reading], beyond: Callable[[int], bool]) -> list[tuple[int, int, bool]]:
    """(first index, index after the last, beyond?) of each run of the segment."""
    runs: list[tuple[int, int, bool]] = []
    for i, reading in enumerate(segment):
        side = beyond(reading.glucose)
        if runs and runs[-1][2] == side:
            runs[-1] = (runs[-1][0], i + 1, side)
        else:
            runs.append((i, i + 1, side))
    return runs


def _kind_episodes(kind: str, segment: list[Reading], interval: int) -> list[Episode]:
    beyond = KINDS[kind]
    minutes = lambda run: (run[1] - run[0]) * interval  # noqa: E731
    # Groups: a run back within the threshold for >= 15 minutes starts the next one.
    groups: list[list[tuple[int, int, bool]]] = []
    for run in _runs(segment, beyond):
        if not groups or (not run[2] and minutes(run) >= EDGE_MINUTES):
            groups.append([])
        groups[-1].append(run)
    breaker_starts = {group[0][0] for group in groups[1:]}
    found: list[Episode] = []
    for group in groups:
        beyond_runs = [run for run in group if run[2]]
        if not beyond_runs:
            continue
        last = beyond_runs[-1][1] - 1
        following = last + 1 if last + 1 < len(segment) else None
        end = (
            segment[following].at
            if following is not None
            else segment[last].at + dt.timedelta(minutes=interval)
        )
        recovered = following is not None and following in breaker_starts

        def episode(name: str, first: int) -> Episode:
            values = [r.glucose for r in segment[first : last + 1]]  # noqa: B023
            return Episode(
                name,
                segment[first].at,
                end,  # noqa: B023
                recovered,  # noqa: B023
                len(values),
                min(values),
                max(values),
            )

        starting = [run for run in beyond_runs if minutes(run) >= EDGE_MINUTES]
        if starting:
            found.append(episode(kind, starting[0][0]))
        if kind == "hypo_level_1":
            long_runs = [run for run in beyond_runs if minutes(run) > EXTENDED_HYPO_MINUTES]
            if long_runs:
                found.append(episode("hypo_extended", long_runs[0][0]))
        if kind == "hyper_level_1":
            readings = range(group[0][0], group[-1][1])
            for i in readings:
                if segment[i].glucose <= 250:
                    continue
                ahead = sum(
                    1
                    for j in readings
                    if segment[j].glucose > 250
                    and segment[i].at <= segment[j].at < segment[i].at + EXTENDED_HYPER_WINDOW
                )
                if ahead * interval >= EXTENDED_HYPER_MINUTES:
                    found.append(episode("hyper_extended", i))
                    break
    return found


def episodes(readings: Sequence[Reading], interval: int = 5) -> list[Episode]:
    found = [
        episode
        for segment in _segments(readings)
        for kind in KINDS
        for episode in _kind_episodes(kind, segment, interval)
    ]
    return sorted(found, key=lambda e: (e.start, e.kind))
