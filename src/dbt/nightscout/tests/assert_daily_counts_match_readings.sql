-- Every day's reading_count equals the readings fct_glucose_readings holds for that day.
-- Scoped to the run's window: a run answers for the days it built, and names any day it finds.
with counted as (
    select reading_date, count(*) as reading_count
    from {{ ref('fct_glucose_readings') }}
    where {{ phlo_shared.in_window('reading_date') }}
    group by reading_date
),

days as (
    select reading_date, reading_count
    from {{ ref('fct_daily_glucose_metrics') }}
    where {{ phlo_shared.in_window('reading_date') }}
)

select
    coalesce(days.reading_date, counted.reading_date) as reading_date,
    days.reading_count,
    counted.reading_count as readings_found
from days
full outer join counted on days.reading_date = counted.reading_date
where days.reading_count is distinct from counted.reading_count
