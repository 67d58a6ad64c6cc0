{#-
  Consensus glucose episodes, one row each (rules in macros/glucose.sql). Built over every
  reading at once, in UTC, so that an episode may run across midnight and across a
  daylight-saving change; it belongs to the local day it started. A gap between readings longer
  than var episode_max_gap_minutes ends the episode in progress (no episode spans a gap).
-#}
-- The days the daily metrics cover. A day another process is writing (its readings committed,
-- its daily row not yet) waits for that process's own rebuild of this mart: both marts always
-- describe the same days (every day with readings has its daily row once built).
with covered_days as (
    select reading_date
    from {{ ref('fct_daily_glucose_metrics') }}
),

readings as (
    select entry_id, reading_at, reading_at_local, reading_date, glucose_mg_dl
    from {{ ref('fct_glucose_readings') }}
    where reading_date in (select reading_date from covered_days)
),

gaps as (
    select
        *,
        date_diff('second', lag(reading_at) over by_time, reading_at) / 60.0
            as minutes_since_previous
    from readings
    window by_time as (order by reading_at, entry_id)
),

segments as (
    select
        *,
        sum(
            case
                when minutes_since_previous is null
                    or minutes_since_previous > {{ var('episode_max_gap_minutes') }}
                    then 1
                else 0
            end
        ) over (order by reading_at, entry_id rows unbounded preceding) as segment_id
    from gaps
),

kinds as (
    select *
    from (
        values
        ('hypo_level_1'), ('hypo_level_2'), ('hyper_level_1'), ('hyper_level_2')
    ) as k (kind)
),

flagged as (
    select
        kinds.kind,
        segments.*,
        case kinds.kind
            when 'hypo_level_1' then {{ is_below_range('segments.glucose_mg_dl') }}
            when 'hypo_level_2' then {{ is_very_low('segments.glucose_mg_dl') }}
            when 'hyper_level_1' then {{ is_above_range('segments.glucose_mg_dl') }}
            else {{ is_very_high('segments.glucose_mg_dl') }}
        end as is_beyond
    from segments
    cross join kinds
),

-- Runs: consecutive readings of a segment on the same side of the kind's threshold.
run_edges as (
    select
        *,
        lag(segment_id) over by_kind is distinct from segment_id as starts_segment,
        lag(segment_id) over by_kind is distinct from segment_id
        or lag(is_beyond) over by_kind is distinct from is_beyond as starts_run,
        case
            when lead(segment_id) over by_kind = segment_id then lead(reading_at) over by_kind
        end as next_reading_at
    from flagged
    window by_kind as (partition by kind order by reading_at, entry_id)
),

runs as (
    select
        *,
        sum(case when starts_run then 1 else 0 end)
            over (partition by kind order by reading_at, entry_id rows unbounded preceding)
            as run_id
    from run_edges
),

run_lengths as (
    select
        *,
        {{ reading_minutes('count(*) over (partition by kind, run_id)') }} as run_minutes
    from runs
),

-- Groups: what lies between two endings (a run back within the threshold for >= 15 minutes, or
-- a new segment). A group holds at most one episode: from its first run beyond the threshold
-- for >= 15 minutes to its last reading beyond the threshold.
groups as (
    select
        *,
        sum(
            case
                when starts_segment
                    or (
                        starts_run and not is_beyond
                        and run_minutes >= {{ episode_edge_minutes() }}
                    )
                    then 1
                else 0
            end
        ) over (partition by kind order by reading_at, entry_id rows unbounded preceding)
            as group_id
    from run_lengths
),

windowed as (
    select
        *,
        lead(group_id) over (partition by kind order by reading_at, entry_id) as next_group_id,
        -- Readings > 250 from this one to 120 minutes later, in the same group.
        sum(case when {{ is_very_high('glucose_mg_dl') }} then 1 else 0 end) over (
            partition by kind, group_id
            order by reading_at
            range between current row
            and (
                interval '{{ extended_hyper_window_minutes() }} minutes' - interval '1 second'
            ) following
        ) as very_high_readings_ahead
    from groups
),

grouped as (
    select
        kind,
        group_id,
        min(reading_at) filter (
            where is_beyond and run_minutes >= {{ episode_edge_minutes() }}
        ) as start_at,
        min(reading_at) filter (
            where is_beyond and run_minutes > {{ extended_hypo_minutes() }}
        ) as long_run_start_at,
        min(reading_at) filter (
            where {{ is_very_high('glucose_mg_dl') }}
            and {{ reading_minutes('very_high_readings_ahead') }}
            >= {{ extended_hyper_minutes() }}
        ) as extended_hyper_start_at,
        max(reading_at) filter (where is_beyond) as last_beyond_at,
        -- arg_max_null: the last reading beyond may have no next one (arg_max skips nulls).
        arg_max_null(next_reading_at, reading_at) filter (where is_beyond) as next_at,
        arg_max_null(next_group_id, reading_at) filter (where is_beyond) as next_group_id
    from windowed
    group by kind, group_id
),

levels as (
    select
        kind,
        kind as found_in,
        group_id,
        start_at,
        last_beyond_at,
        next_at,
        next_group_id
    from grouped
    where start_at is not null
),

-- Extended episodes lie within a level 1 group: they end when it ends.
extended as (
    select
        'hypo_extended' as kind,
        kind as found_in,
        group_id,
        long_run_start_at as start_at,
        last_beyond_at,
        next_at,
        next_group_id
    from grouped
    where kind = 'hypo_level_1' and long_run_start_at is not null
    union all
    select
        'hyper_extended' as kind,
        kind as found_in,
        group_id,
        extended_hyper_start_at as start_at,
        last_beyond_at,
        next_at,
        next_group_id
    from grouped
    where kind = 'hyper_level_1' and extended_hyper_start_at is not null
),

episodes as (
    select * from levels
    union all
    select * from extended
),

measured as (
    select
        episodes.kind,
        episodes.start_at,
        episodes.last_beyond_at,
        episodes.next_at,
        episodes.next_at is not null
        and episodes.next_group_id is distinct from episodes.group_id as recovered,
        arg_min(windowed.reading_date, windowed.reading_at) as start_date,
        arg_min(windowed.reading_at_local, windowed.reading_at) as start_at_local,
        count(*) as reading_count,
        min(windowed.glucose_mg_dl) as nadir_glucose_mg_dl,
        max(windowed.glucose_mg_dl) as peak_glucose_mg_dl
    from episodes
    inner join windowed
        on windowed.kind = episodes.found_in
        and windowed.group_id = episodes.group_id
        and windowed.reading_at between episodes.start_at and episodes.last_beyond_at
    group by all
),

ended as (
    select
        *,
        -- The first reading back within the threshold; when the readings stop first (a gap, or
        -- the newest reading), one sensor interval after the last reading beyond it.
        coalesce(
            next_at,
            last_beyond_at + to_minutes(cast({{ var('reading_interval_minutes') }} as bigint))
        ) as end_at
    from measured
),

final as (
    select
        kind || ':' || strftime(start_at, '%Y-%m-%dT%H:%M:%SZ') as episode_id,
        kind,
        start_date,
        start_at,
        start_at_local,
        end_at,
        round(date_diff('second', start_at, end_at) / 60.0, 2) as duration_minutes,
        recovered,
        reading_count,
        nadir_glucose_mg_dl,
        peak_glucose_mg_dl
    from ended
)

select * from final
order by start_at, kind
