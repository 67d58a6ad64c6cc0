"""phlo's structured log lines: one line a event, fields read back, secrets redacted."""

from __future__ import annotations

import logging

import pytest

from phlo_core.log import get_logger, parse_fields, render


def test_an_event_renders_as_one_line_and_reads_back() -> None:
    line = render(
        None,
        "info",
        {"event": "fetched", "days": "2024-01-01..2024-01-02", "rows": 288, "note": "a b; c"},
    )
    assert line == 'fetched days=2024-01-01..2024-01-02 rows=288 note="a b; c"'
    assert parse_fields(line) == (
        "fetched",
        {"days": "2024-01-01..2024-01-02", "rows": 288, "note": "a b; c"},
    )
    # A line that only looks like pairs in part is all message.
    text = "test failed (e.g. reading_date=2024-03-11; glucose_mg_dl=900)"
    assert parse_fields(text) == (text, {})


def test_values_are_redacted_before_they_are_written(caplog: pytest.LogCaptureFixture) -> None:
    log = get_logger("phlo_core.tests")
    with caplog.at_level(logging.INFO, logger="phlo"):
        log.info(
            "connecting",
            url="https://user:hunter2@site.example/api",
            dsn="host=db password=hunter2 user=phlo",
        )
    [record] = caplog.records
    assert record.name == "phlo.tests"
    assert "hunter2" not in record.getMessage()
    assert "site.example" in record.getMessage()
