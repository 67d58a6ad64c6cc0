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
  Hours a local day has: the UTC hour starts (what the source labels) from its midnight to the
  next, so 24, or 23/25 on daylight-saving days, also in zones that shift by half an hour. The
  ingestion counts the same way (locations/weather/ingest.py, expected_hours).
-#}
{% macro hours_in_local_day(date_column) -%}
    cast(
        ceil(epoch(timezone('{{ var("timezone") }}', cast({{ date_column }} + interval 1 day as timestamp))) / 3600)
        - ceil(epoch(timezone('{{ var("timezone") }}', cast({{ date_column }} as timestamp))) / 3600)
        as integer
    )
{%- endmacro %}

{#- Whether a day's total precipitation makes it wet (var wet_day_min_precipitation_mm). -#}
{% macro is_wet_day(precipitation_mm) -%}
    ({{ precipitation_mm }} >= {{ var('wet_day_min_precipitation_mm') }})
{%- endmacro %}
