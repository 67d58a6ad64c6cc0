with readings as (
    select *
    from {{ ref('fct_weather_readings') }}
    where {{ phlo_shared.in_window('observation_date') }}
),

daily as (
    select
        place,
        observation_date,
        arg_max(latitude, observed_at) as latitude,
        arg_max(longitude, observed_at) as longitude,
        min(temperature_c) as temperature_min_c,
        avg(temperature_c) as temperature_mean_c,
        max(temperature_c) as temperature_max_c,
        sum(precipitation_mm) as precipitation_total_mm,
        max(wind_speed_kmh) as wind_speed_max_kmh,
        count(temperature_c) as hours_observed
    from readings
    group by place, observation_date
),

code_hours as (
    select
        place,
        observation_date,
        weather_code,
        count(*) as hour_count
    from readings
    where weather_code is not null
    group by place, observation_date, weather_code
),

-- The day's most frequent code; on a tie the higher code (a fixed, repeatable rule).
dominant_codes as (
    select
        place,
        observation_date,
        weather_code as dominant_weather_code
    from code_hours
    qualify row_number() over (
        partition by place, observation_date
        order by hour_count desc, weather_code desc
    ) = 1
),

final as (
    select
        daily.place,
        daily.observation_date,
        daily.latitude,
        daily.longitude,
        daily.temperature_min_c,
        round(daily.temperature_mean_c, 2) as temperature_mean_c,
        daily.temperature_max_c,
        round(daily.precipitation_total_mm, 2) as precipitation_total_mm,
        daily.wind_speed_max_kmh,
        dominant_codes.dominant_weather_code,
        cast(daily.hours_observed as integer) as hours_observed,
        {{ hours_in_local_day('daily.observation_date') }} as hours_in_day
    from daily
    left join dominant_codes
        on daily.place = dominant_codes.place
        and daily.observation_date = dominant_codes.observation_date
)

select * from final
