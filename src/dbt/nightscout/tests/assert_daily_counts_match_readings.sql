-- Every day's reading_count equals the readings fct_glucose_readings holds for that day.
with counted as (
    select reading_date, count(*) as reading_count
    from {{ ref('fct_glucose_readings') }}
    group by reading_date
)

select days.reading_date, days.reading_count, counted.reading_count as readings_found
from {{ ref('fct_daily_glucose_metrics') }} as days
full outer join counted on days.reading_date = counted.reading_date
where days.reading_count is distinct from counted.reading_count
