-- Every episode is counted once, on the day it started.
with counted as (
    select
        sum(
            hypo_level_1_count + hypo_level_2_count + hypo_extended_count
            + hyper_level_1_count + hyper_level_2_count + hyper_extended_count
        ) as in_days
    from {{ ref('mrt_glucose_episodes_daily') }}
),

listed as (
    select count(*) as in_episodes from {{ ref('mrt_glucose_episodes') }}
)

select * from counted cross join listed where in_days <> in_episodes
