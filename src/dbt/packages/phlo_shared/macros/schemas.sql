{#- A model's custom schema is its layer (bronze, silver, ...), used as-is: no target prefix. -#}
{% macro layer_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema | trim }}
    {%- else -%}
        {{ custom_schema_name | trim | lower }}
    {%- endif -%}
{%- endmacro %}
