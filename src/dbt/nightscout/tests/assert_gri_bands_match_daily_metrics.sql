-- The GRI's bands are the daily metrics' bands taken apart: very low is TBR's very low part,
-- very low + low is TBR, high + very high is TAR (each rounded on its own: within 0.02).
select risk.reading_date, risk.very_low_pct, risk.low_pct, daily.tbr_pct, daily.tar_pct
from {{ ref('mrt_glucose_risk_daily') }} as risk
inner join {{ ref('fct_daily_glucose_metrics') }} as daily
    on risk.reading_date = daily.reading_date
where
    abs(risk.very_low_pct - daily.tbr_very_low_pct) > 0.005
    or abs(risk.very_low_pct + risk.low_pct - daily.tbr_pct) > 0.015
    or abs(risk.high_pct + risk.very_high_pct - daily.tar_pct) > 0.015
    or abs(risk.very_high_pct - daily.tar_very_high_pct) > 0.005
