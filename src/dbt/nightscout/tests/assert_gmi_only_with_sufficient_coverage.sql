-- GMI is reported only for days with at least 70% coverage, and always for those.
select reading_date, coverage_pct, gmi_pct
from {{ ref('fct_daily_glucose_metrics') }}
where (gmi_pct is null) = (100.0 * reading_count / expected_reading_count >= 70)
