with readings as (
    select *
    from {{ ref('fct_glucose_readings') }}
    where {{ phlo_shared.in_window('reading_date') }}
),

days as (
    select *
    from {{ ref('fct_daily_glucose_metrics') }}
    where {{ phlo_shared.in_window('reading_date') }}
),

final as (
    select
        readings.entry_id,
        readings.reading_at,
        readings.reading_at_local,
        readings.reading_date,
        readings.hour_of_day,
        readings.glucose_mg_dl,
        readings.glucose_mmol_l,
        readings.glucose_band,
        readings.direction,
        readings.device,
        readings.minutes_since_previous,
        readings.rate_of_change_mg_dl_per_min,
        coalesce(readings.minutes_since_previous > 15, false) as follows_sensor_gap,
        days.mean_glucose_mg_dl as day_mean_glucose_mg_dl,
        round(readings.glucose_mg_dl - days.mean_glucose_mg_dl, 2) as deviation_from_day_mean_mg_dl,
        days.tir_pct as day_tir_pct,
        days.coverage_pct as day_coverage_pct,
        {{ has_sufficient_coverage('days.coverage_pct') }} as day_has_sufficient_coverage
    from readings
    inner join days on readings.reading_date = days.reading_date
)

select * from final
