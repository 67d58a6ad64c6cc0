-- Either domain may not have run yet on this lakehouse: its table then reads as empty.
with glucose_days as (
    select
        reading_date,
        reading_count,
        coverage_pct,
        mean_glucose_mg_dl,
        cv_pct,
        tir_pct,
        tbr_pct,
        tar_pct,
        gmi_pct
    from {{ phlo_shared.existing_or_empty(source('silver', 'fct_daily_glucose_metrics'), {
        'reading_date': 'date', 'reading_count': 'bigint', 'coverage_pct': 'double',
        'mean_glucose_mg_dl': 'double', 'cv_pct': 'double', 'tir_pct': 'double',
        'tbr_pct': 'double', 'tar_pct': 'double', 'gmi_pct': 'double'
    }) }}
),

weather_days as (
    select
        observation_date,
        temperature_min_c,
        temperature_mean_c,
        temperature_max_c,
        precipitation_total_mm,
        wind_speed_max_kmh,
        dominant_weather_code,
        hours_observed
    from {{ phlo_shared.existing_or_empty(source('silver', 'fct_daily_weather'), {
        'place': 'varchar', 'observation_date': 'date', 'temperature_min_c': 'double',
        'temperature_mean_c': 'double', 'temperature_max_c': 'double',
        'precipitation_total_mm': 'double', 'wind_speed_max_kmh': 'double',
        'dominant_weather_code': 'integer', 'hours_observed': 'bigint'
    }) }}
    where place = '{{ var("weather_place") }}'
),

final as (
    select
        glucose_days.reading_date,
        glucose_days.reading_count,
        glucose_days.coverage_pct,
        glucose_days.mean_glucose_mg_dl,
        glucose_days.cv_pct,
        glucose_days.tir_pct,
        glucose_days.tbr_pct,
        glucose_days.tar_pct,
        glucose_days.gmi_pct,
        '{{ var("weather_place") }}' as weather_place,
        weather_days.temperature_min_c,
        weather_days.temperature_mean_c,
        weather_days.temperature_max_c,
        weather_days.precipitation_total_mm,
        weather_days.wind_speed_max_kmh,
        weather_days.dominant_weather_code,
        weather_days.hours_observed as weather_hours_observed
    from glucose_days
    left join weather_days on glucose_days.reading_date = weather_days.observation_date
)

select * from final
order by reading_date
