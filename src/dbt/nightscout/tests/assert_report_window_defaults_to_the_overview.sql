-- Unset, the report's window is the 14 days ending at the newest reading: its pooled TIR, CV,
-- GMI and coverage are the overview's 14-day ones for that day.
select report.window_end, report.tir_pct, overview.tir_14d_pct
from {{ ref('mrt_glucose_report_window') }} as report
inner join {{ ref('mrt_glucose_overview') }} as overview
    on overview.reading_date = report.window_end
where
    report.tir_pct is distinct from overview.tir_14d_pct
    or report.cv_pct is distinct from overview.cv_14d_pct
    or report.gmi_pct is distinct from overview.gmi_14d_pct
    or report.cgm_active_pct is distinct from overview.coverage_14d_pct
