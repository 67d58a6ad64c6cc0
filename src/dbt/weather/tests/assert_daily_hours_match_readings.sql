-- Every day's hours_observed equals the readings with a temperature fct_weather_readings holds
-- for that place and day.
-- Scoped to the run's window: a run answers for the days it built, and names any day it finds.
with counted as (
    select place, observation_date, count(temperature_c) as hours_observed
    from {{ ref('fct_weather_readings') }}
    where {{ phlo_shared.in_window('observation_date') }}
    group by place, observation_date
),

days as (
    select place, observation_date, hours_observed
    from {{ ref('fct_daily_weather') }}
    where {{ phlo_shared.in_window('observation_date') }}
)

select
    coalesce(days.place, counted.place) as place,
    coalesce(days.observation_date, counted.observation_date) as observation_date,
    days.hours_observed,
    counted.hours_observed as readings_found
from days
full outer join counted
    on days.place = counted.place
    and days.observation_date = counted.observation_date
where days.hours_observed is distinct from counted.hours_observed
