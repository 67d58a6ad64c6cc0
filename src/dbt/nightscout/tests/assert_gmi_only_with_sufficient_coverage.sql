-- GMI is reported only for days with at least 70% coverage, and always for those.
-- Scoped to the run's window, like every test of a partitioned model.
select reading_date, coverage_pct, gmi_pct
from {{ ref('fct_daily_glucose_metrics') }}
where
    {{ phlo_shared.in_window('reading_date') }}
    and (gmi_pct is null) = (100.0 * reading_count / expected_reading_count >= 70)
