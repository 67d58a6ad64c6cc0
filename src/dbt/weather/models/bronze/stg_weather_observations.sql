with source as (
    select *
    from {{ source('raw', 'weather_observations') }}
    where {{ phlo_shared.in_window('partition_date') }}
),

renamed as (
    select
        cast(partition_date as date) as observation_date,
        cast(place as varchar) as place,
        cast(latitude as double) as latitude,
        cast(longitude as double) as longitude,
        cast(observed_at as timestamptz) as observed_at,
        timezone('{{ var("timezone") }}', cast(observed_at as timestamptz)) as observed_at_local,
        cast(temperature_2m as double) as temperature_c,
        cast(relative_humidity_2m as integer) as relative_humidity_pct,
        cast(precipitation as double) as precipitation_mm,
        cast(weather_code as integer) as weather_code,
        cast(wind_speed_10m as double) as wind_speed_kmh,
        cast(pressure_msl as double) as pressure_hpa,
        cast(source as varchar) as source
    from source
)

select * from renamed
