"""Tables for the terminal: fitted to its width, whole anywhere else."""

from __future__ import annotations

from phlo_cli.render import render, to_table

COLUMNS = ["database", "schema", "name", "column_names", "column_types"]
ROWS = [
    ("lake", "silver", "fct_daily_glucose_metrics", ["reading_date"] * 20, ["DATE"] * 20),
    ("lake", "raw", "glucose_entries", ["entry_id", "sgv"], ["VARCHAR", "INTEGER"]),
]


def test_a_wide_table_is_cut_to_the_terminal_and_says_so() -> None:
    whole = to_table(COLUMNS, ROWS)
    assert max(len(line) for line in whole.splitlines()) > 300
    fitted = to_table(COLUMNS, ROWS, width=100)
    assert max(len(line) for line in fitted.splitlines()) <= 100
    assert "fct_daily_glucose_metrics" in fitted  # narrow columns stay whole
    assert "…" in fitted and fitted.endswith("(2 rows)")


def test_csv_and_json_are_never_cut() -> None:
    assert render("json", COLUMNS, ROWS, width=40) == render("json", COLUMNS, ROWS)
    assert render("csv", COLUMNS, ROWS, width=40) == render("csv", COLUMNS, ROWS)
