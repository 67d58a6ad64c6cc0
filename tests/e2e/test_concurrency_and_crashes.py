"""Several processes on one home, and processes killed midway: real `phlo` processes.

DESIGN.md: any number of processes may run on one home at once and all succeed or fail cleanly;
a killed process leaves nothing that breaks the next run.
"""

from __future__ import annotations

import os
import signal
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
from tests.conftest import TEST_SECRET
from tests.e2e.helpers import snapshot

pytestmark = pytest.mark.slow

PHLO = str(Path(sys.executable).with_name("phlo"))
DAYS = ["2024-03-09", "2024-03-10", "2024-03-11"]
ZONE = "America/New_York"


@pytest.fixture(scope="module")
def server() -> Iterator[SampleNightscoutServer]:
    with SampleNightscoutServer(timezone=ZONE, api_secret=TEST_SECRET) as s:
        yield s


@pytest.fixture(scope="module")
def clean_build(
    tmp_path_factory: pytest.TempPathFactory, server: SampleNightscoutServer
) -> dict[str, list[tuple]]:
    """The three days built by one range run in one process: what every test must end with."""
    settings = settings_for(tmp_path_factory.mktemp("clean") / "home", server)
    outcomes = materialize(
        "dlt_glucose_entries+", parse_day_range("2024-03-09..2024-03-11"), settings
    )
    assert outcomes and all(o.success for o in outcomes), [o.errors for o in outcomes]
    return snapshot(settings)


def settings_for(home: Path, server: SampleNightscoutServer) -> PhloSettings:
    return load_settings(
        phlo_home=home,
        phlo_timezone=ZONE,
        nightscout_url=server.url,
        nightscout_api_secret=TEST_SECRET,
    )


def environment(home: Path, server: SampleNightscoutServer) -> dict[str, str]:
    return {
        **os.environ,
        "PHLO_HOME": str(home),
        "PHLO_TIMEZONE": ZONE,
        "NIGHTSCOUT_URL": server.url,
        "NIGHTSCOUT_API_SECRET": TEST_SECRET,
    }


def start(day: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PHLO, "materialize", "dlt_glucose_entries+", "--partition", day],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_at_once(days: list[str], env: dict[str, str], cwd: Path) -> list[tuple[int, str]]:
    processes = [start(day, env, cwd) for day in days]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        results.append((process.returncode, out + err))
    return results


def test_three_processes_on_a_fresh_then_a_built_home_all_succeed(
    tmp_path: Path, server: SampleNightscoutServer, clean_build: dict[str, list[tuple]]
) -> None:
    home = tmp_path / "home"
    env = environment(home, server)
    results = run_at_once(DAYS, env, tmp_path)
    assert [code for code, _ in results] == [0, 0, 0], [out for _, out in results]
    settings = settings_for(home, server)
    assert snapshot(settings) == clean_build

    # ... and again on the home they built: the same days re-materialized at once.
    again = run_at_once(DAYS, env, tmp_path)
    assert [code for code, _ in again] == [0, 0, 0], [out for _, out in again]
    assert snapshot(settings) == clean_build


def signal_during_dbt(
    day: str, delay: float, env: dict[str, str], cwd: Path, signum: int = signal.SIGKILL
) -> tuple[int, str]:
    """Start a run, send `signum` `delay` seconds into its dbt build; its exit code, stderr."""
    victim = start(day, env, cwd)
    assert victim.stderr is not None
    for line in victim.stderr:
        if "running nightscout_dbt_models" in line:
            break
    time.sleep(delay)
    victim.send_signal(signum)
    _, err = victim.communicate(timeout=60)
    return victim.returncode, err


def test_after_kills_during_dbt_the_next_runs_succeed(
    tmp_path: Path, server: SampleNightscoutServer, clean_build: dict[str, list[tuple]]
) -> None:
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    home = tmp_path / "home"
    env = environment(home, server)
    settings = settings_for(home, server)
    running = RunsFilter(statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.STARTING])
    [(code, output)] = run_at_once(["2024-03-09..2024-03-11"], env, tmp_path)
    assert code == 0, output

    interrupted: list[str] = []
    # Killed early in dbt's build (later in it: the production profile's kill test); the next
    # run, of another day, succeeds.
    for killed_day, delay, next_day in (("2024-03-10", 0.3, "2024-03-11"),):
        signal_during_dbt(killed_day, delay, env, tmp_path)
        # Read straight from the instance (instance_for would already mark them failed).
        raw = DagsterInstance.from_config(str(settings.resolved_dagster_home))
        interrupted += [r.dagster_run.run_id for r in raw.get_run_records(running)]
        [(code, output)] = run_at_once([next_day], env, tmp_path)
        assert code == 0, output

    # Ctrl-C during dbt: exit 130, one clear line, the run recorded as canceled.
    code, err = signal_during_dbt("2024-03-09", 0.6, env, tmp_path, signal.SIGINT)
    assert code == 130, err
    assert "terminate called" not in err
    [line] = [e for e in err.splitlines() if e.startswith("phlo: error:")]
    assert line.startswith("phlo: error: interrupted; run ") and line.endswith(" canceled")
    canceled = instance_for(settings).get_run_by_id(line.split(" run ")[1].split()[0])
    assert canceled is not None and canceled.status == DagsterRunStatus.CANCELED

    # Re-running the killed days restores a clean build.
    [(code, output)] = run_at_once(["2024-03-09..2024-03-11"], env, tmp_path)
    assert code == 0, output
    assert snapshot(settings) == clean_build

    instance = instance_for(settings)
    assert instance.get_run_records(running) == [], "no run is left shown as running"
    assert interrupted, "at least one kill landed while its run was running"
    for run_id in interrupted:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == DagsterRunStatus.FAILURE
    runs_dir = settings.dbt_dir / "target" / "nightscout" / "runs"
    assert not runs_dir.exists() or not any(runs_dir.iterdir()), "no dbt run folder left behind"
