with readings as (
    select *
    from {{ ref('stg_glucose_entries') }}
    where {{ phlo_shared.in_window('reading_date') }}
),

sequenced as (
    -- The previous reading is looked for within the same local day only, so that a day's rows
    -- do not depend on whether the day before has been loaded yet.
    select
        *,
        lag(reading_at_utc) over same_day as previous_reading_at,
        lag(glucose_mg_dl) over same_day as previous_glucose_mg_dl
    from readings
    window same_day as (partition by reading_date order by reading_at_utc)
),

final as (
    select
        entry_id,
        reading_at_utc as reading_at,
        reading_at_local,
        reading_date,
        cast(hour(reading_at_local) as integer) as hour_of_day,
        glucose_mg_dl,
        round(glucose_mg_dl / 18.018, 1) as glucose_mmol_l,
        {{ glucose_band('glucose_mg_dl') }} as glucose_band,
        direction,
        device,
        round(date_diff('second', previous_reading_at, reading_at_utc) / 60.0, 2)
            as minutes_since_previous,
        case
            when date_diff('second', previous_reading_at, reading_at_utc) > 0
                then round(
                    (glucose_mg_dl - previous_glucose_mg_dl)
                    / (date_diff('second', previous_reading_at, reading_at_utc) / 60.0),
                    3
                )
        end as rate_of_change_mg_dl_per_min
    from sequenced
)

select * from final
