{#- Consensus bands (Battelino et al. 2019), mg/dL. -#}
{% macro glucose_band(value) -%}
    case
        when {{ value }} < 54 then 'very_low'
        when {{ value }} < 70 then 'low'
        when {{ value }} <= 180 then 'in_range'
        when {{ value }} <= 250 then 'high'
        else 'very_high'
    end
{%- endmacro %}

{#- Glucose management indicator (Bergenstal et al. 2018), % from mean mg/dL. -#}
{% macro gmi_pct(mean_mg_dl) -%}
    (3.31 + 0.02392 * {{ mean_mg_dl }})
{%- endmacro %}

{% macro pct_of(condition) -%}
    100.0 * count(*) filter (where {{ condition }}) / nullif(count(*), 0)
{%- endmacro %}
