"""The compose deployment, real: `phlo deploy compose up` builds phlo's images (the PEXes of
`make pex` on the Debian base), starts PostgreSQL, S3, a code server per location, Dagster's
webserver and daemon in containers on the host's network; a run of glucose_pipeline launched
over GraphQL for one day executes in a container of its own (Dagster's DockerRunLauncher, the
deployment's default), its steps on a Celery worker container (`--workers 1`, beside a Redis
broker), and writes exactly the sample server's readings for that day into the
lakehouse (PostgreSQL catalog, files in S3), read back here through the deployment's own
settings; `down --purge` leaves nothing running, the run's container included."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from locations.nightscout.sample_server import SampleNightscoutServer
from phlo_core.lakehouse.connect import query
from phlo_core.services.compose import project_name, run_label
from phlo_core.services.images import docker, docker_cli
from phlo_core.settings import load_settings
from tests.conftest import TEST_SECRET
from tests.containers import wanted
from tests.e2e.helpers import launch_glucose_day, served_readings
from tests.e2e.test_pex_deploy import DAY, ZONE

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        wanted() != "containers", reason="no Docker engine (make docker-up starts one)"
    ),
]
PHLO = str(Path(sys.executable).with_name("phlo"))


def phlo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PHLO, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PHLO_SERVER": "0", **env},
        timeout=900,
        check=False,
    )


def running(project: str) -> list[str]:
    listed = docker(
        "ps", "--filter", f"label=com.docker.compose.project={project}", "--format", "{{.Names}}"
    )
    return listed.split()


def run_containers(label: str) -> list[str]:
    """Every container a run of the deployment was launched in (running or not)."""
    return docker("ps", "-aq", "--filter", f"label={label}").split()


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("compose")
    env = {"PHLO_HOME": str(tmp / "home")}
    with SampleNightscoutServer(api_secret=TEST_SECRET, timezone=ZONE) as server:
        settings_file = tmp / "locations.env"
        settings_file.write_text(
            f"PHLO_TIMEZONE={ZONE}\nNIGHTSCOUT_URL={server.url}\n"
            f"NIGHTSCOUT_API_SECRET={TEST_SECRET}\n"
        )
        home = load_settings(phlo_home=Path(env["PHLO_HOME"]))
        project = project_name(home)
        started = time.monotonic()
        up = phlo(
            "deploy", "compose", "up", "--env-file", str(settings_file), "--workers", "1", env=env
        )
        label = run_label(home)  # a digest of the deployment's instance, once up wrote it
        try:
            assert up.returncode == 0, up.stderr[-3000:]
            assert TEST_SECRET not in up.stdout + up.stderr
            webserver = up.stdout.split("Dagster's UI: ")[1].split()[0]
            assert project.startswith("phlo-") and label.startswith("phlo.run=")
            yield {
                "url": f"{webserver}/graphql",
                "env": env,
                "server": server,
                "seconds": time.monotonic() - started,
                "project": project,
                "label": label,
            }
        finally:
            down = phlo("deploy", "compose", "down", "--purge", env=env)
            assert down.returncode == 0, down.stderr
            assert running(project) == [], "nothing of the deployment left running"
            assert run_containers(label) == [], "no run's container left behind"


def test_every_container_runs_on_the_host_network(deployed: dict[str, Any]) -> None:
    names = running(deployed["project"])
    services = {name.split("_")[1] for name in names}
    assert services == {
        "postgres", "s3", "nightscout", "weather", "insights", "lakehouse", "webserver", "daemon",
        "broker", "worker",
    }  # fmt: skip
    for name in names:
        mode = docker("inspect", "--format", "{{.HostConfig.NetworkMode}}", name).strip()
        assert mode == "host", name
    # The phlo containers get phlo's settings, not the servers' own superuser password.
    compose_env = Path(deployed["env"]["PHLO_HOME"]) / "deploy" / "compose" / "compose.env"
    superuser = compose_env.read_text().split("PHLO_PG_SUPERUSER_PASSWORD=")[1].split()[0]
    for name in names:
        if name.split("_")[1] not in ("postgres", "s3", "broker"):
            assert superuser not in docker("inspect", "--format", "{{json .Config.Env}}", name)
    # The broker reads its password from a file, not its command line or environment.
    broker = next(name for name in names if name.split("_")[1] == "broker")
    broker_password = json.loads((compose_env.parent / "state.json").read_text())["credentials"][
        "broker_password"
    ]
    seen = docker("inspect", "--format", "{{json .Args}} {{json .Config.Env}}", broker)
    assert broker_password not in seen


def test_a_run_launched_over_graphql_writes_the_day(deployed: dict[str, Any]) -> None:
    run_id, status = launch_glucose_day(deployed["url"], DAY)
    launched = docker("ps", "-aq", "--filter", f"label=dagster/run_id={run_id}").split()
    daemon = f"{deployed['project']}_daemon_1"
    assert status == "SUCCESS", docker("logs", "--tail", "40", (launched or [daemon])[0])

    # It ran in a container of its own, from the phlo image, on the host's network, and
    # exited cleanly; the code server only answered for its code.
    assert len(launched) == 1 and launched[0] in run_containers(deployed["label"])
    image, mode, code = docker(
        "inspect",
        "--format",
        "{{.Config.Image}} {{.HostConfig.NetworkMode}} {{.State.ExitCode}}",
        launched[0],
    ).split()
    env_file = Path(deployed["env"]["PHLO_HOME"]) / "deploy" / "compose" / "compose.env"
    assert f"PHLO_IMAGE={image}" in env_file.read_text().splitlines()
    assert (mode, code) == ("host", "0")
    # Its settings came by name (dagster.yaml names them, holds no value) and no password
    # is on its command line, which any local user can read.
    command = docker("inspect", "--format", "{{json .Args}}", launched[0])
    assert "dagster" in command and "execute_run" in command
    settings_env = (env_file.parent / "settings.env").read_text()
    dagster_url = settings_env.split("PHLO_DAGSTER_POSTGRES_URL=")[1].split()[0]
    password = dagster_url.split("://phlo:")[1].split("@")[0]
    assert password not in command
    assert TEST_SECRET not in command
    # Its steps ran on the Celery worker container (the run's process only handed them out).
    worker = f"{deployed['project']}_worker_1"
    worker_log = subprocess.run(
        [docker_cli(), "logs", worker], capture_output=True, text=True, check=False
    )
    text = worker_log.stdout + worker_log.stderr
    finished = [
        line for line in text.splitlines() if "Task execute_plan[" in line and "succeeded" in line
    ]
    # The day's ingestion and its daily models (the run's other assets are whole tables).
    for step in ("dlt_glucose_entries", "nightscout_dbt_models"):
        assert any(f"Executing steps {step} in celery worker" in line for line in finished), (
            step,
            text[-3000:],
        )

    # Read back through the deployment's own settings (its env file): catalog in its
    # PostgreSQL, files in its S3.
    values = dict(
        line.split("=", 1)
        for line in settings_env.splitlines()
        if line.startswith(("PHLO_LAKE_", "PHLO_S3_"))
    )
    settings = load_settings(
        phlo_home=Path(deployed["env"]["PHLO_HOME"]) / "reader",
        phlo_timezone=ZONE,
        **{key.lower(): value for key, value in values.items()},
    )
    secret_sha1 = hashlib.sha1(TEST_SECRET.encode()).hexdigest()
    readings = served_readings(deployed["server"].url, secret_sha1, DAY, settings.timezone)
    stored = query(
        "select count(*), count(distinct reading_at_utc) from bronze.stg_glucose_entries",
        settings,
    ).rows
    assert readings and stored == [(len(readings), len(readings))]
