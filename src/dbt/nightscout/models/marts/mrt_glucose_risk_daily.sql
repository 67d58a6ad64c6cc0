-- Only the days the daily metrics cover, as in mrt_glucose_episodes (a day another process is
-- still writing waits for that process's own rebuild of this mart).
with covered_days as (
    select reading_date
    from {{ ref('fct_daily_glucose_metrics') }}
),

readings as (
    select reading_date, glucose_band
    from {{ ref('fct_glucose_readings') }}
    where reading_date in (select reading_date from covered_days)
),

daily as (
    select
        reading_date,
        count(*) as reading_count,
        {{ pct_of("glucose_band = 'very_low'") }} as very_low_pct,
        {{ pct_of("glucose_band = 'low'") }} as low_pct,
        {{ pct_of("glucose_band = 'in_range'") }} as in_range_pct,
        {{ pct_of("glucose_band = 'high'") }} as high_pct,
        {{ pct_of("glucose_band = 'very_high'") }} as very_high_pct
    from readings
    group by reading_date
),

final as (
    select
        reading_date,
        reading_count,
        round(very_low_pct, 2) as very_low_pct,
        round(low_pct, 2) as low_pct,
        round(in_range_pct, 2) as in_range_pct,
        round(high_pct, 2) as high_pct,
        round(very_high_pct, 2) as very_high_pct,
        round({{ gri_hypo_component('very_low_pct', 'low_pct') }}, 2) as gri_hypo_component,
        round({{ gri_hyper_component('high_pct', 'very_high_pct') }}, 2) as gri_hyper_component,
        round({{ gri('very_low_pct', 'low_pct', 'high_pct', 'very_high_pct') }}, 2) as gri
    from daily
)

select * from final
order by reading_date
