"""`phlo report glucose` as a user runs it on the demo's home: the page's and the PNG's numbers
are the marts' (and an independent computation's), the page opens without a network and draws
its charts in a real browser (Debian's chromium, headless), bad input exits 2."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from PIL import Image

from locations.nightscout.sample_server import SampleNightscoutServer
from phlo_core.calendar import parse_day_range
from phlo_core.settings import load_settings
from tests.e2e.cgm_reference import gri
from tests.e2e.helpers import report_window_row, served_readings

PHLO = str(Path(sys.executable).with_name("phlo"))
WINDOW = parse_day_range("2024-01-03..2024-01-09")


def phlo(*args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PHLO, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PHLO_HOME": str(home), "PHLO_SERVER": "0"},
        cwd=cwd,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home after `phlo demo` (14 sample days), as a user has it after `make demo`."""
    home = tmp_path_factory.mktemp("report") / "home"
    result = phlo("demo", "--no-catalog", home=home, cwd=home.parent)
    assert result.returncode == 0, result.stderr
    return home


def test_the_demo_writes_the_latest_report_marked_sample(demo_home: Path) -> None:
    page = demo_home / "demo" / "reports" / "glucose.html"
    text = page.read_text()
    assert "SAMPLE DATA" in text and "<title>SAMPLE - Glucose report</title>" in text
    assert "2024-01-01 to 2024-01-14" in text


def report_json(demo_home: Path, tmp_path: Path, *extra: str) -> dict:
    result = phlo(
        "report", "glucose", "--demo", "--start", str(WINDOW.start),
        "--end", str(WINDOW.end - dt.timedelta(days=1)), "--json", *extra,
        home=demo_home, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_report_shows_the_marts_numbers(demo_home: Path, tmp_path: Path) -> None:
    found = report_json(demo_home, tmp_path)
    settings = load_settings(phlo_home=demo_home / "demo")
    mart = report_window_row(settings, WINDOW.start, WINDOW.end - dt.timedelta(days=1))
    assert found["sample"] is True
    for name, value in mart.items():
        expected = value.isoformat() if isinstance(value, dt.date) else value
        assert found[name] == expected, name
    page = Path(found["files"]["html"]).read_text()
    for shown in (f"{mart['tir_pct']:.1f} %", f"{mart['gri']:.1f}", f"{mart['cv_pct']:.1f} %"):
        assert shown in page, shown


def test_the_report_equals_an_independent_computation(demo_home: Path, tmp_path: Path) -> None:
    """The same window recomputed from what the sample source serves (the demo's source is
    deterministic: a new server serves the same readings)."""
    found = report_json(demo_home, tmp_path)
    utc = ZoneInfo("UTC")
    with SampleNightscoutServer(timezone="UTC") as server:
        values = [
            value
            for day in WINDOW.days()
            for value in served_readings(server.url, "", day, utc).values()
        ]
    n = len(values)
    assert found["reading_count"] == n
    assert found["cgm_active_pct"] == pytest.approx(min(100, 100 * n / (7 * 288)), abs=0.006)
    assert found["tir_pct"] == pytest.approx(
        100 * sum(1 for v in values if 70 <= v <= 180) / n, abs=0.006
    )
    assert found["mean_glucose_mg_dl"] == pytest.approx(sum(values) / n, abs=0.006)
    assert found["gri"] == pytest.approx(gri(values)["gri"], abs=0.006)


def test_the_page_needs_no_network_and_the_browser_draws_it(
    demo_home: Path, tmp_path: Path
) -> None:
    found = report_json(demo_home, tmp_path, "--png", str(tmp_path / "report.png"))
    page = Path(found["files"]["html"])
    text = page.read_text()
    # Nothing fetched: no URL anywhere in a src or href, the picture carried in the page.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert 'src="data:image/png;base64,' in text
    png = Image.open(tmp_path / "report.png").convert("RGB")
    assert png.size[0] >= 1000 and png.size[1] >= 1500
    assert len(set(png.get_flattened_data())) > 50, "the PNG has drawn charts, not a blank page"

    browser = shutil.which("chromium")
    if browser is None:
        if os.environ.get("PHLO_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (CI installs it: .ci/run)")
        pytest.skip("chromium is not installed (apt install chromium)")
    shot = tmp_path / "shot.png"
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    done = subprocess.run(
        [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={shot}",
            "--window-size=1400,2600", "--virtual-time-budget=5000", page.as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    pixels = Image.open(shot).convert("RGB")
    # The part of the page where the picture sits (below the tables) is drawn: the AGP's
    # median line and the in-range green are there, not a broken image's blank.
    area = pixels.crop((0, 500, pixels.size[0], pixels.size[1])).get_flattened_data()
    chart = [pixel for pixel in area if isinstance(pixel, tuple)]  # RGB: each a tuple
    assert len(set(chart)) > 50

    def near(colour: tuple[int, int, int]) -> int:
        return sum(
            1 for pixel in chart if sum(abs(a - b) for a, b in zip(pixel, colour, strict=True)) < 30
        )

    assert near((0x0B, 0x3D, 0x91)) > 500, "the median line and the daily traces"
    assert near((0x2B, 0x8A, 0x3E)) > 2000, "the in-range part of the time-in-ranges bar"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "2024-01-09", "--end", "2024-01-03"], "is after --end"),
        (["--start", "2024-13-01"], "is not a date"),
        (["--out", "/nonexistent/folder/r.html"], "does not exist"),
        (["--png", "picture.jpg"], "ending in .png"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    demo_home: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    result = phlo("report", "glucose", "--demo", *args, home=demo_home, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.html"))


def test_an_unknown_report_and_an_empty_window(demo_home: Path, tmp_path: Path) -> None:
    unknown = phlo("report", "weather", home=demo_home, cwd=tmp_path)
    assert unknown.returncode == 2 and "reports: glucose" in unknown.stderr
    empty = phlo(
        "report", "glucose", "--demo", "--start", "2023-01-01", "--end", "2023-01-14",
        home=demo_home, cwd=tmp_path,
    )  # fmt: skip
    assert empty.returncode == 1
    assert "no glucose readings between 2023-01-01 and 2023-01-14" in empty.stderr
    assert not list(tmp_path.glob("*.html"))
