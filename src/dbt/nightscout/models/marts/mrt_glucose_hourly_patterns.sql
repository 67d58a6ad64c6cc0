with readings as (
    select * from {{ ref('fct_glucose_readings') }}
),

bounds as (
    select
        max(reading_date) - 13 as window_start,
        max(reading_date) as window_end
    from readings
),

recent as (
    select readings.*, bounds.window_start, bounds.window_end
    from readings
    cross join bounds
    where readings.reading_date between bounds.window_start and bounds.window_end
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
