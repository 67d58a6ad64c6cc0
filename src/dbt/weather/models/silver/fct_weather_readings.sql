with observations as (
    select *
    from {{ ref('stg_weather_observations') }}
    where {{ phlo_shared.in_window('observation_date') }}
),

final as (
    select
        place,
        observed_at,
        observed_at_local,
        observation_date,
        cast(hour(observed_at_local) as integer) as hour_of_day,
        latitude,
        longitude,
        temperature_c,
        relative_humidity_pct,
        precipitation_mm,
        weather_code,
        wind_speed_kmh,
        pressure_hpa,
        source
    from observations
)

select * from final
