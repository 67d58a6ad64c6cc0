{#-
  Every glucose rule lives here, once: the consensus bands (Battelino et al. 2019, mg/dL), the
  GMI (Bergenstal et al. 2018), the coverage a day needs for its GMI and the readings a local
  day is expected to have. Models call these macros; none retypes a threshold.
-#}

{#- Band limits, mg/dL: very low < 54 <= low < 70 <= in range <= 180 < high <= 250 < very high. -#}
{% macro band_limit(name) -%}
    {{ {"very_low_below": 54, "low_below": 70, "high_above": 180, "very_high_above": 250}[name] }}
{%- endmacro %}

{% macro is_in_range(value) -%}
    {{ value }} between {{ band_limit('low_below') }} and {{ band_limit('high_above') }}
{%- endmacro %}

{% macro is_below_range(value) -%}
    {{ value }} < {{ band_limit('low_below') }}
{%- endmacro %}

{% macro is_very_low(value) -%}
    {{ value }} < {{ band_limit('very_low_below') }}
{%- endmacro %}

{% macro is_above_range(value) -%}
    {{ value }} > {{ band_limit('high_above') }}
{%- endmacro %}

{% macro is_very_high(value) -%}
    {{ value }} > {{ band_limit('very_high_above') }}
{%- endmacro %}

{% macro glucose_band(value) -%}
    case
        when {{ is_very_low(value) }} then 'very_low'
        when {{ is_below_range(value) }} then 'low'
        when {{ value }} <= {{ band_limit('high_above') }} then 'in_range'
        when {{ value }} <= {{ band_limit('very_high_above') }} then 'high'
        else 'very_high'
    end
{%- endmacro %}

{#- Glucose management indicator (Bergenstal et al. 2018), % from mean mg/dL. -#}
{% macro gmi_pct(mean_mg_dl) -%}
    (3.31 + 0.02392 * {{ mean_mg_dl }})
{%- endmacro %}

{#- Whether a coverage percentage is enough to report a GMI (var gmi_min_coverage_pct). -#}
{% macro has_sufficient_coverage(coverage_pct) -%}
    ({{ coverage_pct }} >= {{ var('gmi_min_coverage_pct') }})
{%- endmacro %}

{#- Readings a local day should have: its minutes (1380/1440/1500) / the sensor interval. -#}
{% macro expected_readings(date_column) -%}
    {{ phlo_shared.minutes_in_local_day(date_column, var('timezone')) }}
        / {{ var('reading_interval_minutes') }}
{%- endmacro %}

{% macro pct_of(condition) -%}
    100.0 * count(*) filter (where {{ condition }}) / nullif(count(*), 0)
{%- endmacro %}
