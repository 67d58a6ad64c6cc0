with readings as (
    select reading_date, glucose_mg_dl from {{ ref('fct_glucose_readings') }}
),

days as (
    select reading_date, reading_count, tir_pct, gmi_pct, cv_pct, coverage_pct
    from {{ ref('fct_daily_glucose_metrics') }}
),

windows as (
    select * from (values (7), (14)) as w(window_days)
),

-- Every calendar day of each trailing window, so that days without data count as missing.
calendar as (
    select
        days.reading_date,
        windows.window_days,
        cast(unnest(generate_series(
            days.reading_date - (windows.window_days - 1), days.reading_date, interval 1 day
        )) as date) as calendar_date
    from days
    cross join windows
),

expected as (
    select
        reading_date,
        window_days,
        sum({{ expected_readings('calendar_date') }}) as expected_reading_count
    from calendar
    group by reading_date, window_days
),

rolling as (
    select
        calendar.reading_date,
        calendar.window_days,
        count(readings.glucose_mg_dl) as reading_count,
        avg(readings.glucose_mg_dl) as mean_glucose_mg_dl,
        stddev_samp(readings.glucose_mg_dl) as sd_glucose_mg_dl,
        100.0 * count(*) filter (where {{ is_in_range('readings.glucose_mg_dl') }})
            / nullif(count(readings.glucose_mg_dl), 0) as tir_pct
    from calendar
    left join readings on readings.reading_date = calendar.calendar_date
    group by calendar.reading_date, calendar.window_days
),

scored as (
    select
        rolling.reading_date,
        rolling.window_days,
        round(rolling.tir_pct, 2) as tir_pct,
        round(100.0 * rolling.sd_glucose_mg_dl / rolling.mean_glucose_mg_dl, 2) as cv_pct,
        round(least(100.0, 100.0 * rolling.reading_count / expected.expected_reading_count), 2)
            as coverage_pct,
        case
            when {{ has_sufficient_coverage(
                '100.0 * rolling.reading_count / expected.expected_reading_count'
            ) }}
                then round({{ gmi_pct('rolling.mean_glucose_mg_dl') }}, 2)
        end as gmi_pct
    from rolling
    inner join expected
        on rolling.reading_date = expected.reading_date
        and rolling.window_days = expected.window_days
),

final as (
    select
        days.reading_date,
        days.reading_count,
        days.coverage_pct,
        days.tir_pct,
        days.gmi_pct,
        days.cv_pct,
        w7.tir_pct as tir_7d_pct,
        w7.gmi_pct as gmi_7d_pct,
        w7.cv_pct as cv_7d_pct,
        w7.coverage_pct as coverage_7d_pct,
        w14.tir_pct as tir_14d_pct,
        w14.gmi_pct as gmi_14d_pct,
        w14.cv_pct as cv_14d_pct,
        w14.coverage_pct as coverage_14d_pct
    from days
    inner join scored as w7 on days.reading_date = w7.reading_date and w7.window_days = 7
    inner join scored as w14 on days.reading_date = w14.reading_date and w14.window_days = 14
)

select * from final
order by reading_date
