-- At least one glucose day has weather for var weather_place. A warning, not a failure: when no
-- day has any, the place name is likely wrong (not one of WEATHER_PLACES), or its weather has
-- not been loaded for these days yet. An empty mart (no glucose days yet) passes.
{{ config(severity='warn') }}

with days as (
    select
        count(*) as glucose_days,
        count(weather_hours_observed) as days_with_weather
    from {{ ref('mrt_glucose_weather_daily') }}
)

select
    '{{ var("weather_place") }}' as weather_place,
    glucose_days,
    days_with_weather
from days
where glucose_days > 0 and days_with_weather = 0
