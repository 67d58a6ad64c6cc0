{{ config(materialized='view') }}

{#-
  The modal day of the glucose report's window (a view: computed when read; the window as in
  mrt_glucose_report_window, by default the 14 days ending at the newest reading): every
  reading of the window by local hour of day, with continuous percentiles.
-#}
with window_days as (
    select
        {{ report_window_start(ref('fct_glucose_readings')) }} as window_start,
        {{ report_window_end(ref('fct_glucose_readings')) }} as window_end
),

recent as (
    select readings.*, window_days.window_start, window_days.window_end
    from {{ ref('fct_glucose_readings') }} as readings
    inner join window_days
        on readings.reading_date between window_days.window_start and window_days.window_end
),

hourly as (
    select
        window_start,
        window_end,
        hour_of_day,
        count(*) as reading_count,
        round(avg(glucose_mg_dl), 1) as mean_glucose_mg_dl,
        round(quantile_cont(glucose_mg_dl, 0.05), 1) as p05_glucose_mg_dl,
        round(quantile_cont(glucose_mg_dl, 0.25), 1) as p25_glucose_mg_dl,
        round(quantile_cont(glucose_mg_dl, 0.50), 1) as p50_glucose_mg_dl,
        round(quantile_cont(glucose_mg_dl, 0.75), 1) as p75_glucose_mg_dl,
        round(quantile_cont(glucose_mg_dl, 0.95), 1) as p95_glucose_mg_dl,
        round({{ pct_of(is_in_range('glucose_mg_dl')) }}, 2) as tir_pct
    from recent
    group by window_start, window_end, hour_of_day
)

select * from hourly
order by hour_of_day
