"""`phlo backfill --submit`: the backfill handed to a real `dagster-daemon`, which makes the runs
through the assets' backfill policy and launches them with the instance's run launcher (code
servers it starts from the workspace file); list, status and the tables as for phlo's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from locations.nightscout.sample_server import SampleNightscoutServer
from phlo_core.calendar import parse_day_range
from phlo_core.runs.engine import materialize
from phlo_core.runs.instance import instance_for
from phlo_core.settings import PhloSettings, load_settings
from phlo_core.workspace import DEFAULT_WORKSPACE
from tests.conftest import TEST_SECRET
from tests.e2e.helpers import snapshot

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
ZONE = "Europe/Berlin"
FIRST, LAST = "2024-05-01", "2024-05-04"


@pytest.fixture(scope="module")
def server() -> Iterator[SampleNightscoutServer]:
    with SampleNightscoutServer(timezone=ZONE, api_secret=TEST_SECRET) as s:
        yield s


def environment(home: Path, server: SampleNightscoutServer) -> dict[str, str]:
    return {
        **os.environ,
        "PHLO_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "PHLO_TIMEZONE": ZONE,
        "NIGHTSCOUT_URL": server.url,
        "NIGHTSCOUT_API_SECRET": TEST_SECRET,
    }


def settings_for(home: Path, server: SampleNightscoutServer) -> PhloSettings:
    return load_settings(
        phlo_home=home,
        phlo_timezone=ZONE,
        nightscout_url=server.url,
        nightscout_api_secret=TEST_SECRET,
    )


def phlo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "phlo"), *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_a_submitted_backfill_runs_in_the_daemon_and_equals_a_clean_build(
    tmp_path: Path, server: SampleNightscoutServer
) -> None:
    clean = settings_for(tmp_path / "clean", server)
    outcomes = materialize("dlt_glucose_entries+", parse_day_range(f"{FIRST}..{LAST}"), clean)
    assert all(o.success for o in outcomes), [o.errors for o in outcomes]

    home = tmp_path / "home"
    env = environment(home, server)
    settings = settings_for(home, server)
    instance_for(settings)  # writes DAGSTER_HOME/dagster.yaml, which the daemon reads
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", str(DEFAULT_WORKSPACE)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "daemon.log", "w"),  # noqa: SIM115
    )
    try:
        submitted = phlo(
            env,
            "backfill",
            "glucose_entries",
            "--start-date",
            FIRST,
            "--end-date",
            LAST,
            "--submit",
        )
        assert submitted.returncode == 0, submitted.stderr
        assert "4 day(s) handed to Dagster's daemon" in submitted.stdout
        # The insights mart is rebuilt whole in another code location: named, not handed over.
        assert "insights_published_marts (PHLO_PUBLISH_POSTGRES_URL is not set)" in submitted.stderr
        assert "mrt_glucose_weather_daily" in submitted.stderr
        deadline = time.monotonic() + 600
        while True:
            [listed] = json.loads(phlo(env, "backfill", "list", "--json").stdout)
            if listed["dagster"] not in ("requested", None) or time.monotonic() > deadline:
                break
            time.sleep(3)
        log = (tmp_path / "daemon.log").read_text()[-3000:]
        assert listed["dagster"] == "completed_success", (listed, log)
        assert listed["finished"] and listed["done"] == 4, listed
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
    assert snapshot(settings) == snapshot(clean)
    status = json.loads(
        phlo(
            env, "status", "glucose_entries", "--start-date", FIRST, "--end-date", LAST, "--json"
        ).stdout
    )
    assert status[0]["done"] == 4 and status[0]["failed"] == 0
    runs = instance_for(settings).get_run_records()
    assert runs and {r.dagster_run.tags.get("dagster/backfill") for r in runs} == {listed["id"]}
    # Nothing left to do: resuming says so rather than submitting an empty backfill.
    again = phlo(env, "backfill", "--resume", listed["id"])
    assert again.returncode == 0 and "every day is done" in again.stdout, again.stderr
