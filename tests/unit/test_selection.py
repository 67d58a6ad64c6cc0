from __future__ import annotations

import pytest

from phlo_core.runs.selection import SelectionError, parse_selection


def test_names_lists_and_graph_operators() -> None:
    assert parse_selection("dlt_glucose_entries+") == [("dlt_glucose_entries", False, True)]
    assert parse_selection(" a , +b ,c+, +d+ ") == [
        ("a", False, False),
        ("b", True, False),
        ("c", False, True),
        ("d", True, True),
    ]


@pytest.mark.parametrize("selection", ["", " , ", "+", "a,+"])
def test_a_selection_naming_nothing_is_refused(selection: str) -> None:
    with pytest.raises(SelectionError):
        parse_selection(selection)
