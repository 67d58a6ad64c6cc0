"""Settings refused by the `phlo` command as a user meets them: one line, exit 2, nothing of a
password shown (issue 18, item 8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_cli import phlo

# libpq cuts this password at its first '@': `could not translate host name
# "t-tail9@127.0.0.1"` was what a user saw.
PASSWORD = "s3cr@t-tail9"


@pytest.mark.parametrize(
    ("variable", "url", "command"),
    [
        (
            "PHLO_LAKE_CATALOG",
            f"postgres:postgresql://phlo:{PASSWORD}@127.0.0.1:5432/phlo_lake",
            ["query", "select 1"],
        ),
        (
            "PHLO_DAGSTER_POSTGRES_URL",
            f"postgresql://phlo:{PASSWORD}@127.0.0.1:5432/phlo_dagster",
            ["logs"],
        ),
        (
            "PHLO_PUBLISH_POSTGRES_URL",
            f"postgresql://phlo:{PASSWORD}@127.0.0.1:5432/phlo_marts",
            ["status"],
        ),
    ],
)
def test_a_postgres_url_with_an_unencoded_at_is_one_line_and_shows_no_password(
    variable: str, url: str, command: list[str], tmp_path: Path
) -> None:
    result = phlo(*command, env={"PHLO_HOME": str(tmp_path / "home"), variable: url})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("phlo: error:")
    assert variable in lines[0] and "percent-encode" in lines[0]
    shown = result.stdout + result.stderr
    for part in (PASSWORD, "s3cr", "t-tail9", "tail9@"):
        assert part not in shown
