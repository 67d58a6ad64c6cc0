{#- Rows for which the boolean expression is false or null. -#}
{% test expression_is_true(model, expression, column_name=none, where=none) %}
select *
from {{ model }}
where not coalesce(({{ expression }}), false)
  {% if where %} and ({{ where }}) {% endif %}
{% endtest %}
