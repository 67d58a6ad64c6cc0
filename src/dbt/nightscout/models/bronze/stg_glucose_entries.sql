with source as (
    select *
    from {{ source('raw', 'glucose_entries') }}
    where {{ phlo_shared.in_window('partition_date') }}
),

renamed as (
    select
        entry_id,
        to_timestamp(reading_at_ms / 1000.0) as reading_at_utc,
        timezone('{{ var("timezone") }}', to_timestamp(reading_at_ms / 1000.0)) as reading_at_local,
        partition_date as reading_date,
        cast(sgv as integer) as glucose_mg_dl,
        direction,
        cast(trend as integer) as trend,
        device,
        cast(noise as integer) as noise
    from source
)

select * from renamed
