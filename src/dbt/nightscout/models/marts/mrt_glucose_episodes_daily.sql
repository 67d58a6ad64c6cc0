with days as (
    select reading_date from {{ ref('fct_daily_glucose_metrics') }}
),

episodes as (
    select start_date, kind from {{ ref('mrt_glucose_episodes') }}
),

final as (
    select
        days.reading_date,
        count(episodes.kind) filter (where episodes.kind = 'hypo_level_1') as hypo_level_1_count,
        count(episodes.kind) filter (where episodes.kind = 'hypo_level_2') as hypo_level_2_count,
        count(episodes.kind) filter (where episodes.kind = 'hypo_extended')
            as hypo_extended_count,
        count(episodes.kind) filter (where episodes.kind = 'hyper_level_1')
            as hyper_level_1_count,
        count(episodes.kind) filter (where episodes.kind = 'hyper_level_2')
            as hyper_level_2_count,
        count(episodes.kind) filter (where episodes.kind = 'hyper_extended')
            as hyper_extended_count
    from days
    left join episodes on episodes.start_date = days.reading_date
    group by days.reading_date
)

select * from final
order by reading_date
