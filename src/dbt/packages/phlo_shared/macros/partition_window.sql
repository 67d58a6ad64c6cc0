{#-
  The partition window a run covers, passed by the orchestrator as vars:
  start_date (inclusive) and end_date (exclusive), local calendar days.
  Without vars (a plain `dbt build`) the window is everything.
-#}
{% macro window_start() -%}
    cast('{{ var("start_date", "1900-01-01") }}' as date)
{%- endmacro %}

{% macro window_end() -%}
    cast('{{ var("end_date", "2999-12-31") }}' as date)
{%- endmacro %}

{% macro in_window(column) -%}
    ({{ column }} >= {{ phlo_shared.window_start() }} and {{ column }} < {{ phlo_shared.window_end() }})
{%- endmacro %}

{#-
  Pre-hook of partitioned incremental models: delete the window's rows in the same transaction
  that inserts the new ones, so a day that lost all its rows upstream loses them here too.
-#}
{% macro delete_window(column) -%}
    {% if is_incremental() -%}
        delete from {{ this }} where {{ phlo_shared.in_window(column) }}
    {%- else -%}
        select 1
    {%- endif %}
{%- endmacro %}

{#- Minutes in a local calendar day: 1440, or 1380/1500 on daylight-saving transition days. -#}
{% macro minutes_in_local_day(date_column, timezone) -%}
    date_diff(
        'minute',
        timezone('{{ timezone }}', cast({{ date_column }} as timestamp)),
        timezone('{{ timezone }}', cast({{ date_column }} + interval 1 day as timestamp))
    )
{%- endmacro %}

{#-
  A source table of another location, or, while that location has not written it yet, an
  empty relation with the columns given (name: type), so a model that reads two domains builds
  on a lakehouse where only one of them has run. Call it with `source(...)` so the dependency
  is still in the manifest (and in Dagster's lineage).
-#}
{% macro existing_or_empty(relation, columns) -%}
    {%- if execute and adapter.get_relation(
        database=relation.database, schema=relation.schema, identifier=relation.identifier
    ) is none -%}
        (select {% for name, type in columns.items() -%}
            cast(null as {{ type }}) as {{ name }}{{ "," if not loop.last }}
        {% endfor %} where false)
    {%- else -%}
        {{ relation }}
    {%- endif -%}
{%- endmacro %}
