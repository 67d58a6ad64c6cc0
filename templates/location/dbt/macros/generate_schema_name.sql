{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ phlo_shared.layer_schema_name(custom_schema_name, node) }}
{%- endmacro %}
