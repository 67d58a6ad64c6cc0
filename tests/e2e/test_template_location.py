"""A domain is a folder: the template location (templates/location), put into a copy of the
checkout as a user starts one (its two folders and one entry of the workspace file, nothing else
changed), loads, materializes a day from its source over HTTP into its dbt model, and shows in
`phlo status`, in the deployed gRPC workspace and in the settings example."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from phlo_core.lakehouse.connect import query
from phlo_core.services.layout import free_port
from phlo_core.settings import load_settings
from phlo_core.workspace import REPO_ROOT

TEMPLATE = REPO_ROOT / "templates" / "location"
PHLO = str(Path(sys.executable).with_name("phlo"))
DAY = dt.date(2024, 3, 5)
ZONE = "America/New_York"
COPIED = ("src/python", "src/dbt", "infra/dagster", ".env.example")
SKIPPED = shutil.ignore_patterns("__pycache__", "target", "dbt_packages", "logs", "*.pyc")


def files_of(root: Path, parts: tuple[str, ...]) -> dict[str, bytes]:
    found = {}
    for part in parts:
        top = root / part
        paths = [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()]
        for path in paths:
            relative = path.relative_to(root)
            if not SKIPPED(str(root), list(relative.parts)):  # none of its parts is skipped
                found[str(relative)] = path.read_bytes()
    return found


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout's code, dbt projects and workspace, plus the template as location
    `example`: its python folder, its dbt project and its line in the workspace file."""
    root = tmp_path_factory.mktemp("checkout")
    for part in COPIED:
        if (REPO_ROOT / part).is_file():
            shutil.copy(REPO_ROOT / part, root / part)
        else:
            shutil.copytree(REPO_ROOT / part, root / part, ignore=SKIPPED)
    shutil.copytree(TEMPLATE / "python", root / "src/python/locations/example", ignore=SKIPPED)
    shutil.copytree(TEMPLATE / "dbt", root / "src/dbt/example", ignore=SKIPPED)
    # Named so that Pants leaves them alone in templates/: BUILD files once copied.
    (root / "src/python/locations/example/pex.BUILD").rename(
        root / "src/python/locations/example/BUILD"
    )
    (root / "src/dbt/example/project.BUILD").rename(root / "src/dbt/example/BUILD")
    workspace = root / "infra/dagster/workspace.yaml"
    document = yaml.safe_load(workspace.read_text())
    document["load_from"].append(
        {
            "python_module": {
                "module_name": "locations.example.definitions",
                "location_name": "example",
            }
        }
    )
    workspace.write_text(yaml.safe_dump(document, sort_keys=False))
    return root


def test_only_the_locations_folders_and_the_workspace_file_differ(checkout: Path) -> None:
    mine, theirs = files_of(checkout, COPIED), files_of(REPO_ROOT, COPIED)
    changed = {path for path in mine.keys() & theirs.keys() if mine[path] != theirs[path]}
    added = mine.keys() - theirs.keys()
    assert changed == {"infra/dagster/workspace.yaml"}
    assert added and all(
        path.startswith(("src/python/locations/example/", "src/dbt/example/")) for path in added
    )
    assert not theirs.keys() - mine.keys()


@pytest.fixture(scope="module")
def source(checkout: Path) -> Iterator[str]:
    """The template's own sample server, started as a user would (`python -m`)."""
    port = free_port()
    env = {**os.environ, **code_path(checkout)}
    server = subprocess.Popen(
        [sys.executable, "-m", "locations.example.sample_server", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        banner = server.stdout.readline()
        assert "SAMPLE DATA" in banner, banner
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def code_path(checkout: Path) -> dict[str, str]:
    """The copy's code first on the path of every process (its phlo_core finds the copy's dbt
    projects and workspace): PYTHONPATH, and under Pants, whose `phlo` is a PEX that reads
    its code from PEX_EXTRA_SYS_PATH, that too."""
    code = str(checkout / "src/python")
    found = {"PYTHONPATH": code}
    for name in ("PEX_EXTRA_SYS_PATH", "__PEX_EXTRA_SYS_PATH__"):
        if os.environ.get(name):
            found[name] = os.pathsep.join([code, os.environ[name]])
    return found


def phlo(checkout: Path, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PHLO, *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=home.parent,
        env={
            **os.environ,
            **code_path(checkout),
            "PHLO_WORKSPACE": str(checkout / "infra/dagster/workspace.yaml"),
            "PHLO_HOME": str(home),
            "PHLO_TIMEZONE": ZONE,
            **env,
        },
    )


def expected_events(day: dt.date) -> list[int]:
    """The values the template's source serves for a local day: one at half past each UTC
    hour, (hour x 7 + day of month) % 100, computed here from its documented rule."""
    tz = ZoneInfo(ZONE)
    start = dt.datetime.combine(day, dt.time(), tz).astimezone(dt.UTC)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tz).astimezone(dt.UTC)
    at, values = start.replace(minute=30), []
    while at < end:
        values.append((at.hour * 7 + at.day) % 100)
        at += dt.timedelta(hours=1)
    return values


def test_the_template_location_materializes_a_day_and_shows_everywhere(
    checkout: Path, source: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    missing = phlo(checkout, home, "materialize", "example_events", "--partition", str(DAY))
    assert missing.returncode == 2, missing.stderr
    assert "EXAMPLE_URL" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1

    done = phlo(
        checkout,
        home,
        "materialize",
        "example_events+",
        "--partition",
        str(DAY),
        EXAMPLE_URL=source,
    )
    assert done.returncode == 0, done.stderr
    assert "24 events loaded, 0 rejected" in done.stdout + done.stderr

    settings = load_settings(phlo_home=home, phlo_timezone=ZONE)
    rows = query(
        "select event_date, count(*), sum(value), min(value), max(value) "
        "from bronze.stg_example_events group by event_date",
        settings,
    ).rows
    values = expected_events(DAY)
    assert rows == [(DAY, len(values), sum(values), min(values), max(values))]

    status = phlo(
        checkout, home, "status", "--start-date", str(DAY), "--end-date", str(DAY), "--json"
    )
    assert status.returncode == 0, status.stderr
    found = {entry["asset"]: entry for entry in json.loads(status.stdout)}
    assert found["example_events"]["location"] == "example"
    assert found["example_events"]["done"] == 1
    assert found["stg_example_events"]["done"] == 1

    deployed = yaml.safe_load(phlo(checkout, home, "deploy", "workspace").stdout)
    servers = {entry["grpc_server"]["location_name"] for entry in deployed["load_from"]}
    assert servers == {"nightscout", "weather", "insights", "lakehouse", "example"}

    example = phlo(checkout, home, "settings", "example").stdout
    assert "# EXAMPLE_URL=" in example and "EXAMPLE_MAX_REJECTED_PCT=5.0" in example
