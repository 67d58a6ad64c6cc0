with source as (
    select *
    from {{ source('raw', 'example_events') }}
    where {{ phlo_shared.in_window('partition_date') }}
),

renamed as (
    select
        cast(partition_date as date) as event_date,
        cast(event_id as varchar) as event_id,
        cast(occurred_at as timestamptz) as occurred_at,
        cast(value as integer) as value
    from source
)

select * from renamed
