-- GMI is reported only for days with sufficient coverage (var gmi_min_coverage_pct), and
-- always for those.
-- Scoped to the run's window, like every test of a partitioned model.
select reading_date, coverage_pct, gmi_pct
from {{ ref('fct_daily_glucose_metrics') }}
where
    {{ phlo_shared.in_window('reading_date') }}
    and (gmi_pct is null)
    = {{ has_sufficient_coverage('100.0 * reading_count / expected_reading_count') }}
