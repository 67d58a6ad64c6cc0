"""What `phlo demo` needs from this location: a sample source, the days, what to show."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

from locations.nightscout.sample_server import SampleNightscoutServer
from phlo_core.calendar import DayRange
from phlo_core.settings import PhloSettings

DAYS = DayRange(dt.date(2024, 1, 1), dt.date(2024, 1, 15))
SELECTION = "dlt_glucose_entries+"
SOURCE = "a local Nightscout-compatible server (sample CGM data, not a real person's)"
EXPLORE_SQL = "select * from marts.mrt_glucose_overview"
_DEMO_SECRET = "phlo-demo-api-secret"

REPORTS = [
    (
        "Daily glucose metrics",
        """
        select reading_date, reading_count, coverage_pct, mean_glucose_mg_dl, cv_pct,
               tir_pct, tbr_pct, tar_pct, gmi_pct
        from silver.fct_daily_glucose_metrics
        order by reading_date
        """,
    ),
    (
        "Hourly glucose profile, latest 14 days (AGP percentiles, mg/dL)",
        """
        select hour_of_day, reading_count, p05_glucose_mg_dl as p05, p25_glucose_mg_dl as p25,
               p50_glucose_mg_dl as p50, p75_glucose_mg_dl as p75, p95_glucose_mg_dl as p95,
               tir_pct
        from marts.mrt_glucose_hourly_patterns
        order by hour_of_day
        """,
    ),
    (
        "Glycemia Risk Index and episodes started, per day",
        """
        select risk.reading_date, risk.gri, risk.gri_hypo_component as gri_hypo,
               risk.gri_hyper_component as gri_hyper, episodes.hypo_level_1_count as hypo_l1,
               episodes.hypo_level_2_count as hypo_l2, episodes.hyper_level_1_count as hyper_l1,
               episodes.hyper_level_2_count as hyper_l2,
               episodes.hyper_extended_count as hyper_ext
        from marts.mrt_glucose_risk_daily as risk
        inner join marts.mrt_glucose_episodes_daily as episodes using (reading_date)
        order by reading_date
        """,
    ),
]


@contextmanager
def sample_source(settings: PhloSettings) -> Iterator[dict[str, object]]:
    """Serve sample CGM data over Nightscout's real HTTP API on loopback, with auth on."""
    with SampleNightscoutServer(timezone=settings.phlo_timezone, api_secret=_DEMO_SECRET) as server:
        yield {"nightscout_url": server.url, "nightscout_api_secret": _DEMO_SECRET}
