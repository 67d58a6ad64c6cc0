{{ config(materialized='view') }}

{#-
  The glucose report's numbers for one window of local days (a view: computed when read). The
  window is DuckDB's variables glucose_report_start and glucose_report_end (dates, inclusive),
  set by `phlo report glucose`; unset, the 14 days ending at the newest reading.
-#}
with window_days as (
    select
        {{ report_window_start(ref('fct_glucose_readings')) }} as window_start,
        {{ report_window_end(ref('fct_glucose_readings')) }} as window_end
),

readings as (
    select readings.glucose_mg_dl, readings.glucose_band
    from {{ ref('fct_glucose_readings') }} as readings
    inner join window_days
        on readings.reading_date between window_days.window_start and window_days.window_end
),

calendar as (
    select cast(unnest(generate_series(window_start, window_end, interval 1 day)) as date)
        as calendar_date
    from window_days
),

expected as (
    select sum({{ expected_readings('calendar_date') }}) as expected_reading_count
    from calendar
),

pooled as (
    select
        count(*) as reading_count,
        avg(glucose_mg_dl) as mean_glucose_mg_dl,
        stddev_samp(glucose_mg_dl) as sd_glucose_mg_dl,
        {{ pct_of("glucose_band = 'very_low'") }} as very_low_pct,
        {{ pct_of("glucose_band = 'low'") }} as low_pct,
        {{ pct_of("glucose_band = 'in_range'") }} as in_range_pct,
        {{ pct_of("glucose_band = 'high'") }} as high_pct,
        {{ pct_of("glucose_band = 'very_high'") }} as very_high_pct
    from readings
),

episodes as (
    select
        count(*) filter (where kind = 'hypo_level_1') as hypo_level_1_count,
        count(*) filter (where kind = 'hypo_level_2') as hypo_level_2_count,
        count(*) filter (where kind = 'hypo_extended') as hypo_extended_count,
        count(*) filter (where kind = 'hyper_level_1') as hyper_level_1_count,
        count(*) filter (where kind = 'hyper_level_2') as hyper_level_2_count,
        count(*) filter (where kind = 'hyper_extended') as hyper_extended_count
    from {{ ref('mrt_glucose_episodes') }} as episodes
    inner join window_days
        on episodes.start_date between window_days.window_start and window_days.window_end
),

final as (
    select
        window_days.window_start,
        window_days.window_end,
        cast(window_days.window_end - window_days.window_start + 1 as integer) as window_days,
        pooled.reading_count,
        cast(expected.expected_reading_count as integer) as expected_reading_count,
        round(
            least(100.0, 100.0 * pooled.reading_count / expected.expected_reading_count), 2
        ) as cgm_active_pct,
        round(pooled.mean_glucose_mg_dl, 2) as mean_glucose_mg_dl,
        round(pooled.sd_glucose_mg_dl, 2) as sd_glucose_mg_dl,
        round(100.0 * pooled.sd_glucose_mg_dl / pooled.mean_glucose_mg_dl, 2) as cv_pct,
        case
            when {{ has_sufficient_coverage(
                '100.0 * pooled.reading_count / expected.expected_reading_count'
            ) }}
                then round({{ gmi_pct('pooled.mean_glucose_mg_dl') }}, 2)
        end as gmi_pct,
        round(pooled.very_low_pct, 2) as very_low_pct,
        round(pooled.low_pct, 2) as low_pct,
        round(pooled.in_range_pct, 2) as tir_pct,
        round(pooled.high_pct, 2) as high_pct,
        round(pooled.very_high_pct, 2) as very_high_pct,
        round(pooled.very_low_pct + pooled.low_pct, 2) as tbr_pct,
        round(pooled.high_pct + pooled.very_high_pct, 2) as tar_pct,
        round({{ gri_hypo_component('pooled.very_low_pct', 'pooled.low_pct') }}, 2)
            as gri_hypo_component,
        round({{ gri_hyper_component('pooled.high_pct', 'pooled.very_high_pct') }}, 2)
            as gri_hyper_component,
        round({{ gri(
            'pooled.very_low_pct', 'pooled.low_pct', 'pooled.high_pct', 'pooled.very_high_pct'
        ) }}, 2) as gri,
        episodes.*
    from window_days
    cross join pooled
    cross join expected
    cross join episodes
)

select * from final
