with days as (
    select * from {{ ref('fct_daily_weather') }}
),

rolling as (
    select
        *,
        -- Days missing from the 7 calendar days, or without a temperature, do not count.
        avg(temperature_mean_c) over (
            partition by place
            order by observation_date
            range between interval 6 days preceding and current row
        ) as temperature_mean_7d_c
    from days
),

final as (
    select
        place,
        observation_date,
        latitude,
        longitude,
        temperature_min_c,
        temperature_mean_c,
        temperature_max_c,
        round(temperature_mean_7d_c, 2) as temperature_mean_7d_c,
        precipitation_total_mm,
        wind_speed_max_kmh,
        dominant_weather_code,
        {{ wmo_description('dominant_weather_code') }} as weather_description,
        {{ is_wet_day('precipitation_total_mm') }} as is_wet_day,
        hours_observed,
        hours_in_day,
        hours_observed = hours_in_day as is_complete_day
    from rolling
)

select * from final
order by place, observation_date
