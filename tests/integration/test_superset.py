"""Superset beside the local servers, as a user reaches it from the demo with one command
(`phlo demo --dashboards`): installed into an environment of its own, on loopback, behind a login
whose password is never printed and that another local user cannot read; the repository's
dashboards imported onto the demo's published marts, every chart's data equal to those marts,
each dashboard drawn by a real browser; importing again changes nothing and exporting gives the
repository's bundle back; stopped by `phlo services down`.

Slow: the first run on a machine installs Superset (a few minutes); later runs reuse the
environment in ~/.cache/phlo."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import psycopg2.extras
import pytest
from PIL import Image

from phlo_core.services.dashboards import (
    BUNDLE_DIR,
    SupersetApi,
    read_bundle,
    superset_session,
)
from phlo_core.services.superset import environment_dir
from tests.other_user import OtherUser

pytestmark = pytest.mark.slow
PHLO = str(Path(sys.executable).with_name("phlo"))
Superset = tuple[Path, str, str]  # (PHLO_HOME, Superset's URL, the admin password)


def phlo(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PHLO, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PHLO_HOME": str(home), "PHLO_SERVER": "0"},
        cwd=home.parent,
        timeout=1200,
        check=False,
    )


@pytest.fixture(scope="module")
def superset(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Superset]:
    """A home where `phlo demo --dashboards` ran: servers, Superset, the demo, the import."""
    home = tmp_path_factory.mktemp("superset") / "phlo"
    demo = phlo("demo", "--dashboards", home=home)
    try:
        assert demo.returncode == 0, demo.stderr[-3000:]
        state = json.loads((home / "services" / "state.json").read_text())
        password = state["credentials"]["superset_admin_password"]
        for secret in (password, state["credentials"]["role_password"]):
            assert secret not in demo.stdout + demo.stderr, "no password is ever printed"
        url = f"http://127.0.0.1:{state['superset_port']}"
        assert f"{url}/superset/dashboard/glucose/" in demo.stdout
        yield home, url, password
    finally:
        phlo("services", "down", "--purge", home=home)


@pytest.fixture
def api(superset: Superset) -> Iterator[SupersetApi]:
    _, url, password = superset
    with superset_session(url, "admin", password) as session:
        yield session


def published_rows(home: Path, table: str) -> list[dict[str, Any]]:
    """A mart as the demo published it, read straight from PostgreSQL."""
    values = dict(
        line.split("=", 1)
        for line in (home / "demo" / "services.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    url = values["PHLO_PUBLISH_POSTGRES_URL"].strip("'")
    with (
        psycopg2.connect(url) as connection,
        connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor,
    ):
        cursor.execute(f"select * from marts.{table}")  # a name from the repository's bundle
        return [dict(row) for row in cursor.fetchall()]


def epoch_ms(day: dt.date) -> float:
    return float(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def expected_rows(chart: dict[str, Any], rows: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """What the chart's saved query must answer, computed here from the published rows: its
    x-axis truncated to the chart's time grain (a day, a week from Monday), each metric's
    aggregate (MAX, SUM) per x; a raw table's rows as they are. Keyed by the x value."""
    query = json.loads(chart["query_context"])["queries"][0]
    if not query["metrics"]:  # a table of the mart's columns
        columns = query["columns"]
        return {
            epoch_ms(row[columns[0]]): {
                c: epoch_ms(row[c]) if isinstance(row[c], dt.date) else row[c] for c in columns
            }
            for row in rows
        }
    axis = query["columns"][0]
    x, grain = axis["sqlExpression"], axis.get("timeGrain")
    groups: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        key = row[x]
        if grain == "P1W":
            key = key - dt.timedelta(days=key.weekday())
        if isinstance(key, dt.date):
            key = epoch_ms(key)
        groups.setdefault(key, []).append(row)
    aggregate = {"MAX": max, "SUM": sum}
    expected = {}
    for key, members in groups.items():
        expected[key] = {x: key}
        for metric in query["metrics"]:
            values = [m[metric["column"]["column_name"]] for m in members]
            present = [v for v in values if v is not None]
            expected[key][metric["label"]] = (
                aggregate[metric["aggregate"]](present) if present else None
            )
    return expected


def test_it_runs_on_loopback_from_an_environment_of_its_own(
    superset: Superset,
) -> None:
    home, url, _ = superset
    assert httpx.get(f"{url}/health", timeout=10).text == "OK"
    status = phlo("services", "status", "--json", home=home)
    found = {s["name"]: s for s in json.loads(status.stdout)}
    assert found["superset"]["state"] == "running" and found["superset"]["answers"]
    assert found["superset"]["address"] == url
    assert (environment_dir() / "bin" / "superset").exists()
    # Its own SQLAlchemy 1.4, beside the locations' 2.x.
    python = str(environment_dir() / "bin" / "python")
    probe = "import sqlalchemy; print(sqlalchemy.__version__)"
    version = subprocess.run(
        [python, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert version.startswith("1.4")


def test_everything_wants_the_login(superset: Superset) -> None:
    _, url, password = superset
    assert httpx.get(f"{url}/api/v1/chart/", timeout=10).status_code == 401
    wrong = httpx.post(
        f"{url}/api/v1/security/login",
        json={"username": "admin", "password": "not-it", "provider": "db"},
        timeout=30,
    )
    assert wrong.status_code == 401
    login = httpx.post(
        f"{url}/api/v1/security/login",
        json={"username": "admin", "password": password, "provider": "db"},
        timeout=30,
    )
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    charts = httpx.get(
        f"{url}/api/v1/chart/", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert charts.status_code == 200


def test_another_user_gets_neither_the_password_nor_in(
    superset: Superset, second_user: OtherUser
) -> None:
    home, url, _ = superset
    state = home / "services" / "state.json"
    config = home / "services" / "superset" / "superset_config.py"
    for secret in (state, config):
        assert (secret.stat().st_mode & 0o077) == 0, secret
        read = second_user.run(["cat", str(secret)])
        assert read.returncode != 0 and "Permission denied" in read.stderr
    asked = second_user.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{url}/api/v1/dashboard/"]
    )
    assert asked.stdout == "401"


def test_every_chart_answers_the_published_marts(superset: Superset, api: SupersetApi) -> None:
    home, _, _ = superset
    bundle = read_bundle()
    datasets = [c for n, c in bundle.items() if n.startswith("datasets/")]
    tables = {str(c["uuid"]): c["table_name"] for c in datasets}
    ids = {chart["uuid"]: chart["id"] for chart in api.charts()}
    charts = [c for n, c in bundle.items() if n.startswith("charts/")]
    assert len(charts) == 8 and all(str(c["uuid"]) in ids for c in charts)
    for chart in charts:
        rows = published_rows(home, tables[str(chart["dataset_uuid"])])
        assert rows, f"{chart['slice_name']}: the demo published its mart"
        expected = expected_rows(chart, rows)
        answered = api.chart_data(ids[str(chart["uuid"])])
        x = next(iter(next(iter(expected.values()))))
        assert {row[x]: row for row in answered} == expected, chart["slice_name"]


def test_each_dashboard_is_drawn_in_a_browser(superset: Superset, tmp_path: Path) -> None:
    """Logged in as a person would (the login form), each dashboard shows every chart drawn:
    no error box, a canvas (or the table) in each chart's frame, and pixels in it."""
    if shutil.which("chromium") is None:
        if os.environ.get("PHLO_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (CI installs it: .ci/run)")
        pytest.skip("chromium is not installed (apt install chromium)")
    from playwright.sync_api import sync_playwright

    _, url, password = superset
    bundle = read_bundle()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/superset/dashboard/glucose/")
        assert "/login/" in page.url, "a dashboard wants the login first"
        page.fill("input#username", "admin")
        page.fill("input#password", password)
        page.click("button[type=submit]")
        page.wait_for_url("**/superset/dashboard/glucose/**", timeout=60_000)
        for dashboard in (c for n, c in bundle.items() if n.startswith("dashboards/")):
            placed = [
                e for e in dashboard["position"].values()
                if isinstance(e, dict) and e.get("type") == "CHART"
            ]  # fmt: skip
            page.goto(f"{url}/superset/dashboard/{dashboard['slug']}/?standalone=1")
            frames = page.locator(".dashboard-component-chart-holder")
            drawn = frames.locator("canvas, table")
            drawn.nth(len(placed) - 1).wait_for(timeout=90_000)
            page.wait_for_load_state("networkidle")
            assert frames.count() == len(placed), dashboard["slug"]
            assert page.locator(".alert-danger, [role=alert]").count() == 0, dashboard["slug"]
            for index in range(frames.count()):
                frame = frames.nth(index)
                assert frame.locator("canvas, table").count() >= 1, (dashboard["slug"], index)
                shot = tmp_path / f"{dashboard['slug']}-{index}.png"
                frame.screenshot(path=str(shot))
                colours = set(Image.open(shot).convert("RGB").get_flattened_data())
                assert len(colours) > 20, f"{dashboard['slug']}: chart {index} is blank"
        browser.close()


def test_importing_again_changes_nothing_and_exporting_gives_the_bundle_back(
    superset: Superset, api: SupersetApi, tmp_path: Path
) -> None:
    home, _, _ = superset
    before = sorted((c["uuid"], c["id"]) for c in api.charts())
    again = phlo("dashboards", "import", "--demo", "--json", home=home)
    assert again.returncode == 0, again.stderr
    assert {d["slug"]: d["charts"] for d in json.loads(again.stdout)} == {
        "glucose": 5,
        "glucose-and-weather": 3,
    }
    assert sorted((c["uuid"], c["id"]) for c in api.charts()) == before, "updated in place"
    copy = tmp_path / "superset"
    shutil.copytree(BUNDLE_DIR, copy)
    exported = phlo("dashboards", "export", "--out", str(copy), home=home)
    assert exported.returncode == 0, exported.stderr
    assert "0 file(s) changed" in exported.stderr, exported.stdout
    # An edit made in the UI comes back as a change of that chart's file only.
    chart_id = next(c["id"] for c in api.charts() if c["slice_name"] == "Episodes per week")
    api.update_chart(chart_id, {"slice_name": "Episodes by week"})
    edited = phlo("dashboards", "export", "--out", str(copy), home=home)
    changed = copy / "charts" / "episodes_per_week.yaml"
    assert edited.stdout.splitlines() == [f"wrote {changed}"], edited.stdout
    assert "slice_name: Episodes by week" in changed.read_text()
    state = json.loads((home / "services" / "state.json").read_text())
    secret = state["credentials"]["role_password"]
    assert all(secret not in path.read_text() for path in copy.rglob("*.yaml"))
    restored = phlo("dashboards", "import", "--demo", home=home)
    assert restored.returncode == 0, restored.stderr
    assert any(c["slice_name"] == "Episodes per week" for c in api.charts()), "the repo wins"


def test_without_superset_the_commands_say_what_to_do(tmp_path: Path) -> None:
    home = tmp_path / "phlo"
    for args in (("dashboards", "import"), ("dashboards", "export", "--out", str(tmp_path))):
        result = phlo(*args, home=home)
        assert result.returncode == 1
        assert result.stderr.strip().endswith(
            "Superset is not running: `phlo services up --with superset` first"
        )


def test_down_stops_it(superset: Superset) -> None:
    home, url, _ = superset
    down = phlo("services", "down", home=home)
    assert down.returncode == 0, down.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=5)
    again = phlo("services", "up", "--with", "superset", home=home)
    assert again.returncode == 0, again.stderr[-2000:]
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200, "the same port again"
