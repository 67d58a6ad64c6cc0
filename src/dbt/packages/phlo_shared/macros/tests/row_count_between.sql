{#- Fails when the model's row count lies outside [min_value, max_value]. -#}
{% test row_count_between(model, min_value=0, max_value=none) %}
with counted as (select count(*) as row_count from {{ model }})
select row_count
from counted
where row_count < {{ min_value }}
  {% if max_value is not none %} or row_count > {{ max_value }} {% endif %}
{% endtest %}
