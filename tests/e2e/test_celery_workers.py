"""Scale-out on Dagster's own machinery: a backfill handed to a real `dagster-daemon` on the
production profile queues its runs in Dagster's coordinator (at most PHLO_RUNS_PER_LOCATION of
one location at once), and their steps execute on two Celery workers (`phlo worker start`) that
stand for two machines: each its own PHLO_HOME and working folder, sharing only the broker (a
real redis-server), the lake's catalog and Dagster's storage (PostgreSQL) and the bucket (S3).
Every served reading is stored exactly once and the tables equal a one-process build; a worker
killed in the middle of a step leaves a failed run, which `phlo backfill --resume` completes."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from locations.nightscout.sample_server import SampleNightscoutServer
from phlo_core.calendar import parse_day_range
from phlo_core.lakehouse.connect import query
from phlo_core.runs.engine import materialize
from phlo_core.runs.instance import instance_for
from phlo_core.services.broker import broker_start, broker_stop, broker_url
from phlo_core.services.layout import Layout, free_port
from phlo_core.settings import PhloSettings, load_settings
from phlo_core.workspace import DEFAULT_WORKSPACE
from tests.conftest import TEST_SECRET
from tests.e2e.helpers import snapshot
from tests.e2e.test_backfill_submit import BIN, FIRST, LAST, ZONE, settings_for
from tests.e2e.test_backfill_submit import environment as submit_environment

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server() -> Iterator[SampleNightscoutServer]:
    with SampleNightscoutServer(timezone=ZONE, api_secret=TEST_SECRET) as s:
        yield s


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server as `phlo services up --with workers` runs it (loopback, a password)."""
    root = tmp_path_factory.mktemp("broker")
    where = Layout(root, root / "postgres")
    password, port = secrets.token_urlsafe(18), free_port()
    broker_start(where, port, password)
    try:
        yield broker_url(port, password)
    finally:
        broker_stop(where)


def environment(
    home: Path, profile: dict[str, str], server: SampleNightscoutServer, broker: str
) -> dict[str, str]:
    return {
        **submit_environment(home, server),
        **profile,
        "PHLO_EXECUTOR": "celery",
        "PHLO_CELERY_BROKER_URL": broker,
        "PHLO_BACKFILL_DAYS_PER_RUN": "2",  # a backfill of 4 days: two runs, at once
    }


def settings_of(env: dict[str, str]) -> PhloSettings:
    names = PhloSettings.model_fields
    given = {k.lower(): v for k, v in env.items() if k.lower() in names or k.startswith("NIGHT")}
    return load_settings(**given)


def phlo(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "phlo"), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )


class Machine:
    """A worker's machine: its own home and working folder, a `phlo worker start` process."""

    def __init__(self, name: str, root: Path, env_of: Callable[[Path], dict[str, str]]) -> None:
        self.name, self.folder = name, root / name
        self.folder.mkdir(parents=True)
        self.env = env_of(self.folder / "home")
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.folder / "worker.log"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(BIN / "phlo"), "worker", "start", "--name", self.name, "--concurrency", "1"],
            env=self.env,
            cwd=self.folder,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """As its machine dies: the worker and the step it runs, at once, nothing said."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_for_backfill(env: dict[str, str], cwd: Path, backfill_id: str, log: Path) -> dict:
    deadline = time.monotonic() + 900
    while True:
        listed = json.loads(phlo(env, "backfill", "list", "--json", cwd=cwd).stdout)
        [found] = [b for b in listed if b["id"] == backfill_id]
        if found["dagster"] not in ("requested", None):
            return found
        assert time.monotonic() < deadline, (found, log.read_text()[-3000:])
        time.sleep(3)


def step_workers(settings: PhloSettings, run_ids: list[str]) -> dict[str, str]:
    """step key -> the Celery worker that ran it (dagster-celery's engine event says)."""
    from dagster import DagsterEventType

    instance = instance_for(settings)
    try:
        found = {}
        for run_id in run_ids:
            for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
                event = entry.dagster_event
                metadata = event.engine_event_data.metadata if event else {}
                worker = metadata.get("Celery worker")
                if event is not None and worker is not None:
                    found[f"{run_id}:{event.step_key}"] = str(worker.value).split("@")[0]
        return found
    finally:
        instance.dispose()


def run_messages(settings: PhloSettings, run_ids: list[str]) -> str:
    """Every event of the runs as text (their failures' messages in it)."""
    instance = instance_for(settings)
    try:
        return "\n".join(str(entry) for run_id in run_ids for entry in instance.all_logs(run_id))
    finally:
        instance.dispose()


def backfill_runs(settings: PhloSettings, backfill_id: str) -> list[Any]:
    from dagster import RunsFilter

    instance = instance_for(settings)
    try:
        return list(instance.get_run_records(RunsFilter(tags={"phlo/backfill": backfill_id})))
    finally:
        instance.dispose()


def most_at_once(records: list[Any]) -> int:
    """The most runs that were running at the same moment."""
    moments = []
    for record in records:
        if record.start_time is not None and record.end_time is not None:
            moments += [(record.start_time, 1), (record.end_time, -1)]
    running = peak = 0
    for _, change in sorted(moments, key=lambda m: (m[0], m[1])):
        running += change
        peak = max(peak, running)
    return peak


def test_a_backfill_runs_on_two_worker_machines_and_survives_losing_one(
    production_profile: Callable[[], dict[str, str]],
    server: SampleNightscoutServer,
    broker: str,
    tmp_path: Path,
) -> None:
    profile = production_profile()
    clean = settings_for(tmp_path / "clean", server)
    outcomes = materialize("dlt_glucose_entries+", parse_day_range(f"{FIRST}..{LAST}"), clean)
    assert all(o.success for o in outcomes), [o.errors for o in outcomes]

    scheduler = tmp_path / "scheduler"
    scheduler.mkdir()
    env = environment(scheduler / "home", profile, server, broker)
    settings = settings_of(env)
    instance_for(settings).dispose()  # dagster.yaml (the queue) for the daemon
    machines = [
        Machine(name, tmp_path, lambda h: environment(h, profile, server, broker))
        for name in ("worker-a", "worker-b")
    ]
    daemon_log = scheduler / "daemon.log"
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", str(DEFAULT_WORKSPACE)],
        env=env,
        cwd=scheduler,
        stdout=subprocess.DEVNULL,
        stderr=daemon_log.open("w"),
        start_new_session=True,
    )
    try:
        for machine in machines:
            machine.start()
        listed = phlo(env, "worker", "list", "--json", cwd=scheduler)
        deadline = time.monotonic() + 120
        while {w["name"].split("@")[0] for w in json.loads(listed.stdout or "[]")} != {
            "worker-a",
            "worker-b",
        }:
            assert time.monotonic() < deadline, (listed.stdout, listed.stderr)
            time.sleep(2)
            listed = phlo(env, "worker", "list", "--json", cwd=scheduler)

        # Four days, two runs at once, each ingestion step on a machine of its own (the source
        # stalls its first answers, so both are still running when both have started); then the
        # machine running one of them dies.
        server.fail_next(2, status=503, stall_seconds=40)
        submitted = phlo(
            env, "backfill", "glucose_entries", "--start-date", FIRST, "--end-date", LAST,
            "--submit", cwd=scheduler,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        [backfill] = json.loads(phlo(env, "backfill", "list", "--json", cwd=scheduler).stdout)
        deadline = time.monotonic() + 300
        while True:
            runs = backfill_runs(settings, backfill["id"])
            taken = step_workers(settings, [r.dagster_run.run_id for r in runs])
            ingesting = [w for step, w in taken.items() if step.endswith(":dlt_glucose_entries")]
            if len(set(ingesting)) == 2:
                break
            assert time.monotonic() < deadline, (taken, daemon_log.read_text()[-3000:])
            time.sleep(1)
        assert sorted(ingesting) == ["worker-a", "worker-b"]
        victim = next(m for m in machines if m.name == ingesting[0])
        victim.kill()
        failed = wait_for_backfill(env, scheduler, backfill["id"], daemon_log)
        assert failed["dagster"] != "completed_success", failed
        runs = backfill_runs(settings, backfill["id"])
        lost = [r.dagster_run.run_id for r in runs if r.dagster_run.status.value == "FAILURE"]
        assert len(lost) == 1, [r.dagster_run.status for r in runs]
        said = run_messages(settings, lost)
        assert f"the Celery worker {victim.name}@" in said and "stopped answering" in said

        resumed = phlo(env, "backfill", "--resume", backfill["id"], cwd=scheduler)
        assert resumed.returncode == 0, resumed.stderr
        done = wait_for_backfill(env, scheduler, backfill["id"], daemon_log)
        assert done["dagster"] == "completed_success" and done["finished"], done
        runs = backfill_runs(settings, backfill["id"])
        assert most_at_once(runs) <= settings.phlo_runs_per_location
    finally:
        for machine in machines:
            machine.stop()
        daemon.terminate()
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)

    # Every served reading once, every table as a one-process build of the same days.
    assert snapshot(settings) == snapshot(clean)
    [(rows, distinct)] = query(
        "select count(*), count(distinct entry_id) from raw.glucose_entries", settings
    ).rows
    assert rows == distinct == len(snapshot(clean)["raw.glucose_entries"])
