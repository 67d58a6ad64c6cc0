with readings as (
    select *
    from {{ ref('fct_glucose_readings') }}
    where {{ phlo_shared.in_window('reading_date') }}
),

daily as (
    select
        reading_date,
        count(*) as reading_count,
        avg(glucose_mg_dl) as mean_glucose_mg_dl,
        stddev_samp(glucose_mg_dl) as sd_glucose_mg_dl,
        min(glucose_mg_dl) as min_glucose_mg_dl,
        max(glucose_mg_dl) as max_glucose_mg_dl,
        quantile_cont(glucose_mg_dl, 0.5) as median_glucose_mg_dl,
        {{ pct_of(is_in_range('glucose_mg_dl')) }} as tir_pct,
        {{ pct_of(is_below_range('glucose_mg_dl')) }} as tbr_pct,
        {{ pct_of(is_very_low('glucose_mg_dl')) }} as tbr_very_low_pct,
        {{ pct_of(is_above_range('glucose_mg_dl')) }} as tar_pct,
        {{ pct_of(is_very_high('glucose_mg_dl')) }} as tar_very_high_pct
    from readings
    group by reading_date
),

with_coverage as (
    select
        *,
        {{ expected_readings('reading_date') }} as expected_reading_count
    from daily
),

final as (
    select
        reading_date,
        reading_count,
        cast(expected_reading_count as integer) as expected_reading_count,
        round(least(100.0, 100.0 * reading_count / expected_reading_count), 2) as coverage_pct,
        round(mean_glucose_mg_dl, 2) as mean_glucose_mg_dl,
        round(sd_glucose_mg_dl, 2) as sd_glucose_mg_dl,
        round(100.0 * sd_glucose_mg_dl / mean_glucose_mg_dl, 2) as cv_pct,
        min_glucose_mg_dl,
        max_glucose_mg_dl,
        round(median_glucose_mg_dl, 2) as median_glucose_mg_dl,
        round(tir_pct, 2) as tir_pct,
        round(tbr_pct, 2) as tbr_pct,
        round(tbr_very_low_pct, 2) as tbr_very_low_pct,
        round(tar_pct, 2) as tar_pct,
        round(tar_very_high_pct, 2) as tar_very_high_pct,
        case
            when {{ has_sufficient_coverage('100.0 * reading_count / expected_reading_count') }}
                then round({{ gmi_pct('mean_glucose_mg_dl') }}, 2)
        end as gmi_pct
    from with_coverage
)

select * from final
