{#-
  Every weather rule lives here, once: what a WMO weather code means, the hours a local day
  has and when a day counts as wet. Models call these macros; none retypes a rule.
-#}

{#-
  WMO weather interpretation code (WMO 4677, as Open-Meteo reports it) to a short English
  text; null for a null or an unknown code.
-#}
{% macro wmo_description(code) -%}
    case
        when {{ code }} = 0 then 'clear sky'
        when {{ code }} = 1 then 'mainly clear'
        when {{ code }} = 2 then 'partly cloudy'
        when {{ code }} = 3 then 'overcast'
        when {{ code }} in (45, 48) then 'fog'
        when {{ code }} in (51, 53, 55) then 'drizzle'
        when {{ code }} in (56, 57) then 'freezing drizzle'
        when {{ code }} = 61 then 'slight rain'
        when {{ code }} = 63 then 'moderate rain'
        when {{ code }} = 65 then 'heavy rain'
        when {{ code }} in (66, 67) then 'freezing rain'
        when {{ code }} in (71, 73, 75) then 'snow'
        when {{ code }} = 77 then 'snow grains'
        when {{ code }} in (80, 81, 82) then 'rain showers'
        when {{ code }} in (85, 86) then 'snow showers'
        when {{ code }} = 95 then 'thunderstorm'
        when {{ code }} in (96, 99) then 'thunderstorm with hail'
    end
{%- endmacro %}

{#-
  Hours a local day has: 24, or 23/25 on daylight-saving days (its minutes / 60, rounded up so
  that a zone with a half-hour shift still bounds the hours a day can hold).
-#}
{% macro hours_in_local_day(date_column) -%}
    cast(ceil({{ phlo_shared.minutes_in_local_day(date_column, var('timezone')) }} / 60.0) as integer)
{%- endmacro %}

{#- Whether a day's total precipitation makes it wet (var wet_day_min_precipitation_mm). -#}
{% macro is_wet_day(precipitation_mm) -%}
    ({{ precipitation_mm }} >= {{ var('wet_day_min_precipitation_mm') }})
{%- endmacro %}
