"""What `phlo demo` shows of this location: the cross-domain mart. It has no source of its own
and no run: the domains' demos run before it (workspace order) and their `+` selections reach
this mart."""

EXPLORE_SQL = "select * from marts.mrt_glucose_weather_daily"

REPORTS = [
    (
        "Glucose beside the weather (berlin)",
        """
        select reading_date, tir_pct, mean_glucose_mg_dl, gmi_pct, temperature_mean_c,
               precipitation_total_mm, dominant_weather_code
        from marts.mrt_glucose_weather_daily
        order by reading_date
        """,
    ),
]
