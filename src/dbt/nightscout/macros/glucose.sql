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

{#-
  Glycemia Risk Index (Klonoff et al., J Diabetes Sci Technol 2023): from the % of readings in
  the four bands that do NOT overlap (very low < 54, low 54-69, high 181-250, very high > 250).
  GRI = 3.0 x VLow + 2.4 x Low + 1.6 x VHigh + 0.8 x High = 3.0 x hypo + 1.6 x hyper, capped at
  100. (Feeding the cumulative < 70 / > 180 percentages into these weights, as one widely used
  implementation does, counts the very low and very high readings twice.)
-#}
{% macro gri_hypo_component(very_low_pct, low_pct) -%}
    ({{ very_low_pct }} + 0.8 * {{ low_pct }})
{%- endmacro %}

{% macro gri_hyper_component(high_pct, very_high_pct) -%}
    ({{ very_high_pct }} + 0.5 * {{ high_pct }})
{%- endmacro %}

{% macro gri(very_low_pct, low_pct, high_pct, very_high_pct) -%}
    least(
        100.0,
        3.0 * {{ gri_hypo_component(very_low_pct, low_pct) }}
        + 1.6 * {{ gri_hyper_component(high_pct, very_high_pct) }}
    )
{%- endmacro %}

{#-
  Consensus episodes (Battelino et al., Lancet Diabetes Endocrinol 2023), in minutes of readings:
  a reading stands for one sensor interval (var reading_interval_minutes), so 15 minutes are 3
  readings at 5 minutes. An episode starts with >= 15 consecutive minutes beyond its threshold
  and ends with >= 15 consecutive minutes back within it; extended hypoglycaemia is > 120
  consecutive minutes < 70; extended hyperglycaemia >= 90 minutes > 250 within 120 minutes,
  ending with >= 15 minutes <= 180.
-#}
{% macro episode_edge_minutes() -%} 15 {%- endmacro %}
{% macro extended_hypo_minutes() -%} 120 {%- endmacro %}
{% macro extended_hyper_minutes() -%} 90 {%- endmacro %}
{% macro extended_hyper_window_minutes() -%} 120 {%- endmacro %}

{#- The minutes `readings` readings stand for. -#}
{% macro reading_minutes(readings) -%}
    ({{ readings }} * {{ var('reading_interval_minutes') }})
{%- endmacro %}

{#- The glucose report's window (views mrt_glucose_report_*): DuckDB variables set by whoever
    reads them (`phlo report glucose`), else the 14 days ending at the newest reading. -#}
{% macro report_window_end(readings) -%}
    coalesce(
        cast(getvariable('glucose_report_end') as date),
        (select max(reading_date) from {{ readings }})
    )
{%- endmacro %}

{% macro report_window_start(readings) -%}
    coalesce(
        cast(getvariable('glucose_report_start') as date),
        {{ report_window_end(readings) }} - 13
    )
{%- endmacro %}
