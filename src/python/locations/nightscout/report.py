"""The glucose report: an Ambulatory Glucose Profile (AGP) page for a window of days, plus the
Glycemia Risk Index on its grid and the consensus episodes (`phlo report glucose`, and the asset
`glucose_agp_report` that keeps the latest 14 days in PHLO_HOME/reports/glucose.html).

Every number comes from the marts: the views mrt_glucose_report_window (the metrics panel) and
mrt_glucose_report_profile (the modal day) for the window set in DuckDB's variables, and the
readings of gold.mrt_glucose_readings for the daily profiles. Nothing is recomputed here.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from phlo_core.calendar import DayRange
from phlo_core.reports import (
    Rendered,
    Report,
    ReportError,
    embedded_png,
    figure_png,
    mark_sample_figure,
    page,
)

if TYPE_CHECKING:
    import duckdb
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

START_VARIABLE = "glucose_report_start"
END_VARIABLE = "glucose_report_end"
DAILY_PROFILES = 14

# Consensus targets (Battelino et al., Diabetes Care 2019): (column, label, comparison, limit).
TARGETS = [
    ("tir_pct", "Time in range 70-180 mg/dL", ">", 70.0),
    ("tbr_pct", "Time below range < 70 mg/dL", "<", 4.0),
    ("very_low_pct", "Time < 54 mg/dL", "<", 1.0),
    ("tar_pct", "Time above range > 180 mg/dL", "<", 25.0),
    ("very_high_pct", "Time > 250 mg/dL", "<", 5.0),
    ("cv_pct", "Glucose variability (CV)", "<=", 36.0),
]
# The bands of the time-in-ranges bar, top to bottom, with the AGP's colours.
BANDS = [
    ("very_high_pct", "Very high > 250", "#e8590c"),
    ("high_pct", "High 181-250", "#fab005"),
    ("tir_pct", "In range 70-180", "#2b8a3e"),
    ("low_pct", "Low 54-69", "#e03131"),
    ("very_low_pct", "Very low < 54", "#862e2e"),
]
EPISODES = [
    ("hypo_level_1_count", "Level 1 hypoglycaemia (< 70, >= 15 min)"),
    ("hypo_level_2_count", "Level 2 hypoglycaemia (< 54, >= 15 min)"),
    ("hypo_extended_count", "Extended hypoglycaemia (< 70, > 120 min)"),
    ("hyper_level_1_count", "Level 1 hyperglycaemia (> 180, >= 15 min)"),
    ("hyper_level_2_count", "Level 2 hyperglycaemia (> 250, >= 15 min)"),
    ("hyper_extended_count", "Extended hyperglycaemia (> 250, 90 of 120 min)"),
]
GRI_ZONES = [(20, "A", "#2b8a3e"), (40, "B", "#94d82d"), (60, "C", "#fab005"),
             (80, "D", "#f76707"), (100, "E", "#e03131")]  # fmt: skip
MIN_ACTIVE_PCT = 70.0


@dataclass(frozen=True)
class Window:
    metrics: dict[str, Any]
    profile: list[dict[str, Any]]
    days: dict[dt.date, list[tuple[float, int]]]  # local day -> (hour of day, mg/dL)


def _rows(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def newest_day(con: duckdb.DuckDBPyConnection) -> dt.date | None:
    """The newest day with readings (the views' default window ends there)."""
    row = con.execute("select max(reading_date) from marts.mrt_glucose_risk_daily").fetchone()
    return row[0] if row else None


def read_window(con: duckdb.DuckDBPyConnection, window: DayRange) -> Window:
    last = window.end - dt.timedelta(days=1)
    con.execute(f"set variable {START_VARIABLE} = cast(? as date)", [window.start])
    con.execute(f"set variable {END_VARIABLE} = cast(? as date)", [last])
    metrics = _rows(con.execute("select * from marts.mrt_glucose_report_window"))[0]
    if not metrics["reading_count"]:
        raise ReportError(f"no glucose readings between {window.start} and {last}")
    profile = _rows(
        con.execute("select * from marts.mrt_glucose_report_profile order by hour_of_day")
    )
    first_shown = max(window.start, window.end - dt.timedelta(days=DAILY_PROFILES))
    days: dict[dt.date, list[tuple[float, int]]] = {
        day: [] for day in DayRange(first_shown, window.end).days()
    }
    for day, moment, value in con.execute(
        "select reading_date, reading_at_local, glucose_mg_dl from gold.mrt_glucose_readings "
        "where reading_date between ? and ? order by reading_at",
        [first_shown, last],
    ).fetchall():
        days[day].append((moment.hour + moment.minute / 60 + moment.second / 3600, value))
    return Window(metrics, profile, days)


def _number(value: Any, unit: str = "", digits: int = 1) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}{unit}"


def _meets(value: Any, comparison: str, limit: float) -> bool:
    if value is None:
        return False
    return {">": value > limit, "<": value < limit, "<=": value <= limit}[comparison]


def _metrics_lines(m: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(label, value, target or None) of the metrics panel."""
    days = f"{m['window_start']} to {m['window_end']} ({m['window_days']} days)"
    lines: list[tuple[str, str, str | None]] = [
        ("Window", days, None),
        ("Time CGM active", _number(m["cgm_active_pct"], " %"), f">= {MIN_ACTIVE_PCT:.0f} %"),
        ("Mean glucose", _number(m["mean_glucose_mg_dl"], " mg/dL"), None),
        ("GMI", _number(m["gmi_pct"], " %", 2), None),
    ]
    for column, label, comparison, limit in TARGETS:
        lines.append((label, _number(m[column], " %"), f"{comparison} {limit:g} %"))
    lines.append(("Glycemia Risk Index (GRI)", _number(m["gri"], "", 1), None))
    return lines


def draw(window: Window, sample: bool) -> Figure:
    """The AGP page as one figure: metrics, time in ranges, modal day, GRI grid, episodes and
    the daily profiles."""
    from matplotlib import rc_context

    # Titles at the top of their axes (no axes here has ticks or labels above it): by default
    # matplotlib works out each of the 19 titles' place at every draw from its axes' tick labels,
    # 0.15-0.25 s of a PNG that takes about 1 s. The pixels are the same (the same PNG bytes).
    with rc_context({"axes.titley": 1.0}):
        return _draw_figure(window, sample)


def _draw_figure(window: Window, sample: bool) -> Figure:
    from matplotlib.figure import Figure

    m = window.metrics
    figure = Figure(figsize=(11, 15.5))
    grid = figure.add_gridspec(
        5,
        7,
        height_ratios=[1.25, 1.5, 1.25, 0.9, 0.9],
        left=0.08,
        right=0.97,
        bottom=0.03,
        top=0.94,
        hspace=0.45,
        wspace=0.45,
    )
    figure.suptitle("Glucose report (AGP)" + (" - SAMPLE" if sample else ""), fontsize=15)
    _draw_metrics(figure.add_subplot(grid[0, :5]), m)
    _draw_ranges(figure.add_subplot(grid[0, 5:]), m)
    _draw_modal_day(figure.add_subplot(grid[1, :]), window.profile)
    _draw_gri(figure.add_subplot(grid[2, :4]), m)
    _draw_episodes(figure.add_subplot(grid[2, 4:]), m)
    for index, (day, points) in enumerate(window.days.items()):
        _draw_day(figure.add_subplot(grid[3 + index // 7, index % 7]), day, points)
    if sample:
        mark_sample_figure(figure)
    return figure


def _draw_metrics(ax: Axes, m: dict[str, Any]) -> None:
    ax.axis("off")
    ax.set_title("Glucose statistics and targets", loc="left", fontsize=11)
    lines = _metrics_lines(m)
    for row, (label, value, target) in enumerate(lines):
        y = 1 - (row + 0.5) / len(lines)
        ax.text(0.0, y, label, fontsize=9, va="center", transform=ax.transAxes)
        ax.text(0.62, y, value, fontsize=9, va="center", ha="right", transform=ax.transAxes)
        if target:
            ax.text(0.66, y, f"target {target}", fontsize=8, va="center", color="#555",
                    transform=ax.transAxes)  # fmt: skip
    if m["cgm_active_pct"] is not None and m["cgm_active_pct"] < MIN_ACTIVE_PCT:
        ax.text(0.0, -0.08, f"Warning: CGM active under {MIN_ACTIVE_PCT:.0f} % of the window",
                color="#e03131", fontsize=9, transform=ax.transAxes)  # fmt: skip


def _draw_ranges(ax: Axes, m: dict[str, Any]) -> None:
    ax.set_title("Time in ranges", fontsize=11)
    bottom = 0.0
    for column, _, colour in reversed(BANDS):
        share = float(m[column] or 0)
        ax.bar(0, share, bottom=bottom, color=colour, width=0.6)
        bottom += share
    for row, (column, label, colour) in enumerate(BANDS):  # labels evenly spaced: thin bands
        y = 95 - row * 22.5
        ax.text(0.45, y, "\u25a0", color=colour, va="center", fontsize=10)
        ax.text(0.7, y, f"{label}\n{_number(m[column], ' %')}", va="center", fontsize=8)
    ax.set_xlim(-0.4, 3.2)
    ax.set_ylim(0, 100)
    ax.set_xticks([])
    ax.set_ylabel("% of readings")


def _draw_modal_day(ax: Axes, profile: Sequence[dict[str, Any]]) -> None:
    hours = [p["hour_of_day"] + 0.5 for p in profile]
    ax.set_title("Ambulatory glucose profile: all days of the window as one day", fontsize=11)
    ax.axhspan(70, 180, color="#2b8a3e", alpha=0.07)
    for limit in (70, 180):
        ax.axhline(limit, color="#2b8a3e", linewidth=1)
    ax.fill_between(hours, [p["p05_glucose_mg_dl"] for p in profile],
                    [p["p95_glucose_mg_dl"] for p in profile], color="#4dabf7", alpha=0.25,
                    label="5-95 %")  # fmt: skip
    ax.fill_between(hours, [p["p25_glucose_mg_dl"] for p in profile],
                    [p["p75_glucose_mg_dl"] for p in profile], color="#1c7ed6", alpha=0.45,
                    label="25-75 %")  # fmt: skip
    ax.plot(hours, [p["p50_glucose_mg_dl"] for p in profile], color="#0b3d91", linewidth=2,
            label="median")  # fmt: skip
    ax.set_xlim(0, 24)
    ax.set_xticks(range(0, 25, 3), [f"{h:02d}:00" for h in range(0, 25, 3)])
    top = max([p["p95_glucose_mg_dl"] for p in profile] + [250])
    ax.set_ylim(40, top + 20)
    ax.set_ylabel("mg/dL")
    ax.legend(loc="upper right", fontsize=8)


def _draw_gri(ax: Axes, m: dict[str, Any]) -> None:
    import numpy as np

    ax.set_title(f"Glycemia Risk Index: {_number(m['gri'])} (zone {gri_zone(m['gri'])})",
                 fontsize=11)  # fmt: skip
    x, y = np.meshgrid(np.linspace(0, 30, 121), np.linspace(0, 60, 121))
    risk = np.minimum(100, 3.0 * x + 1.6 * y)
    levels = [0] + [upper for upper, _, _ in GRI_ZONES]
    ax.contourf(x, y, risk, levels=levels, colors=[c for _, _, c in GRI_ZONES], alpha=0.35)
    ax.plot(float(m["gri_hypo_component"]), float(m["gri_hyper_component"]), "o",
            color="black", markersize=8)  # fmt: skip
    ax.set_xlim(0, 30)
    ax.set_ylim(0, 60)
    ax.set_xlabel("hypoglycaemia component (%): very low + 0.8 x low")
    ax.set_ylabel("hyperglycaemia component (%):\nvery high + 0.5 x high")


def gri_zone(gri: Any) -> str:
    if gri is None:
        return "n/a"
    return next(zone for upper, zone, _ in GRI_ZONES if float(gri) <= upper)


def _draw_episodes(ax: Axes, m: dict[str, Any]) -> None:
    ax.axis("off")
    ax.set_title("Episodes started in the window", loc="left", fontsize=11)
    for row, (column, label) in enumerate(EPISODES):
        y = 1 - (row + 0.5) / len(EPISODES)
        ax.text(0.0, y, label, fontsize=8.5, va="center", transform=ax.transAxes)
        ax.text(1.0, y, str(m[column]), fontsize=9, va="center", ha="right",
                transform=ax.transAxes)  # fmt: skip


def _draw_day(ax: Axes, day: dt.date, points: Sequence[tuple[float, int]]) -> None:
    ax.axhspan(70, 180, color="#2b8a3e", alpha=0.12)
    if points:
        ax.plot([p[0] for p in points], [p[1] for p in points], color="#0b3d91", linewidth=0.8)
    else:
        ax.text(12, 200, "no data", ha="center", fontsize=8, color="#888")
    ax.set_title(day.strftime("%a %d %b"), fontsize=8)
    ax.set_xlim(0, 24)
    ax.set_ylim(40, 400)
    ax.set_xticks([0, 12, 24], ["", "12:00", ""], fontsize=6)
    ax.tick_params(axis="y", labelsize=6)


def _html_body(window: Window, picture: str) -> str:
    m = window.metrics
    rows = []
    for label, value, target in _metrics_lines(m):
        rows.append(
            f'<tr><td>{html.escape(label)}</td><td class="num">{html.escape(value)}</td>'
            f"<td>{html.escape(target or '')}</td></tr>"
        )
    checks = []
    for column, label, comparison, limit in TARGETS:
        met = _meets(m[column], comparison, limit)
        checks.append(
            f'<tr><td>{html.escape(label)}</td><td class="num">{_number(m[column], " %")}</td>'
            f'<td class="{"met" if met else "miss"}">{"met" if met else "not met"}</td></tr>'
        )
    episodes = "".join(
        f'<tr><td>{html.escape(label)}</td><td class="num">{m[column]}</td></tr>'
        for column, label in EPISODES
    )
    warning = ""
    if m["cgm_active_pct"] is not None and m["cgm_active_pct"] < MIN_ACTIVE_PCT:
        warning = (
            f'<div class="warn">Time CGM active is {_number(m["cgm_active_pct"], " %")}, under '
            f"{MIN_ACTIVE_PCT:.0f} %: the window's numbers may not represent it.</div>"
        )
    gri = (
        f"<p>Glycemia Risk Index <b>{_number(m['gri'])}</b> (zone {gri_zone(m['gri'])}); "
        f"hypoglycaemia component {_number(m['gri_hypo_component'])}, hyperglycaemia component "
        f"{_number(m['gri_hyper_component'])}.</p>"
    )
    return (
        f'{warning}<div class="grid"><div><h2>Statistics</h2><table>{"".join(rows)}</table>'
        f"</div><div><h2>Targets</h2><table>{''.join(checks)}</table>{gri}</div>"
        f"<div><h2>Episodes</h2><table>{episodes}</table></div></div>{picture}"
    )


def render(con: duckdb.DuckDBPyConnection, window: DayRange, sample: bool) -> Rendered:
    data = read_window(con, window)
    figure = draw(data, sample)
    m = data.metrics
    subtitle = (
        f"{m['window_start']} to {m['window_end']}: {m['reading_count']} readings, "
        f"from the lakehouse's marts"
    )
    png = figure_png(figure)
    body = _html_body(data, embedded_png(png, "AGP, GRI grid, episodes and daily profiles"))
    summary = {
        key: (value.isoformat() if isinstance(value, dt.date) else value)
        for key, value in m.items()
    } | {"sample": sample, "gri_zone": gri_zone(m["gri"])}
    return Rendered(page("Glucose report", subtitle, body, sample=sample), png, summary)


GLUCOSE_REPORT = Report(
    name="glucose",
    title="Glucose report (AGP, GRI, episodes)",
    asset_name="glucose_agp_report",
    window_days=14,
    newest_day=newest_day,
    render=render,
    upstream=("mrt_glucose_report_window", "mrt_glucose_report_profile", "mrt_glucose_readings"),
)
REPORTS = [GLUCOSE_REPORT]
