"""`phlo deploy compose up|down`: the production profile on one Docker host
(infra/docker-compose.yml) from the images phlo builds here (phlo_core.services.images):
PostgreSQL, SeaweedFS's S3 server, a code server per location, Dagster's webserver and daemon,
all on the host's network (loopback).

Kept under PHLO_HOME/deploy/compose (owner only): state.json (the generated passwords and keys,
the ports, chosen once and kept), compose.env (what the compose file interpolates: images,
ports, the servers' own credentials), settings.env (what every phlo container reads: phlo's
settings for that deployment, with the user's own settings for the locations appended; no
superuser password), and the S3 server's configuration, written by the same code as `phlo
services up` (keys, mutual TLS on its internal ports), mounted into its container.

Runs launched by the daemon or the UI run each in a container of its own by default
(PHLO_RUN_LAUNCHER=docker: infra/docker-compose.docker-runs.yml gives those two the engine's
socket), or in the location's code server (`--run-launcher process`).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shlex
import shutil
import subprocess
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phlo_core.runs.instance import RUN_CONTAINER_LABEL, instance_label
from phlo_core.services.images import (
    docker,
    docker_cli,
    engine_answers,
    phlo_image,
    server_images,
)
from phlo_core.services.layout import (
    WEED_PORTS,
    Layout,
    ServiceError,
    credentials,
    free_port,
    own_folder,
    port_in_use,
    write_private_file,
)
from phlo_core.settings import DOCKER_RUNS_URL_SCHEME, PhloSettings
from phlo_core.tool_env import Progress
from phlo_core.workspace import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "infra" / "docker-compose.yml"
DOCKER_RUNS_FILE = REPO_ROOT / "infra" / "docker-compose.docker-runs.yml"
WORKERS_FILE = REPO_ROOT / "infra" / "docker-compose.workers.yml"
RUN_LAUNCHERS = ("docker", "process")
# What `up` writes for the phlo containers itself: not taken from --env-file.
RESERVED = frozenset(
    {
        "PHLO_RUN_LAUNCHER",
        "PHLO_RUN_IMAGE",
        "PHLO_HOME",
        "DAGSTER_HOME",
        "PHLO_DAGSTER_POSTGRES_URL",
        "PHLO_EXECUTOR",
        "PHLO_CELERY_BROKER_URL",
    }
)
WEED_IN_IMAGE = "/usr/local/bin/weed"
LOCATIONS = 4  # consecutive code-server ports, in the workspace file's order


@dataclass(frozen=True)
class Deployment:
    webserver: str  # http://127.0.0.1:PORT
    env_file: str
    images: dict[str, str]
    seconds: float


def compose_dir(settings: PhloSettings) -> Path:
    return settings.home / "deploy" / "compose"


def compose_cli() -> list[str]:
    """Debian's docker-compose, or Docker's compose plugin, whichever is here."""
    found = shutil.which("docker-compose")
    if found:
        return [found]
    plugin = subprocess.run([docker_cli(), "compose", "version"], capture_output=True, check=False)
    if plugin.returncode == 0:
        return [docker_cli(), "compose"]
    raise ServiceError("no Docker compose: apt-get install docker-compose")


def project_name(settings: PhloSettings) -> str:
    """The compose project of this home's deployment (its containers, volume and network
    names): one per PHLO_HOME, so that a second home's deployment, a test's say, on the same
    engine never touches this one."""
    folder = str(compose_dir(settings).resolve())
    return f"phlo-{hashlib.sha256(folder.encode()).hexdigest()[:8]}"


def _deployed_settings(settings: PhloSettings) -> dict[str, str | None]:
    """The settings the latest `up` gave the phlo containers (settings.env; none before)."""
    from dotenv import dotenv_values

    return dict(dotenv_values(compose_dir(settings) / "settings.env"))


def _compose(settings: PhloSettings, *args: str) -> None:
    folder = compose_dir(settings)
    files = [COMPOSE_FILE]
    deployed = _deployed_settings(settings)
    if deployed.get("PHLO_RUN_LAUNCHER") == "docker":
        files.append(DOCKER_RUNS_FILE)
    if deployed.get("PHLO_EXECUTOR") == "celery":
        files.append(WORKERS_FILE)
    settings_file = folder / "settings.env"
    if not settings_file.exists():  # a deployment made before phlo wrote one (`down`)
        write_private_file(settings_file, "")
    done = subprocess.run(
        [*compose_cli(), "--env-file", str(folder / "compose.env")]
        + [arg for file in files for arg in ("-f", str(file))]
        + ["-p", project_name(settings), *args],
        capture_output=True,
        check=False,
        # Where an older compose.env names none, the compose file still finds the settings.
        env={**os.environ, "PHLO_SETTINGS_ENV": str(settings_file)},
    )
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines() or ["?"]
        # Its own summary ("Encountered errors ...") comes last; the first error says which.
        errors = [
            line.removeprefix("ERROR:").strip()
            for line in lines
            if "ERROR" in line and "Encountered errors" not in line
        ]
        reason = errors[0] if errors else lines[-1]
        raise ServiceError(f"docker-compose {args[0]} failed: {reason}")


def _consecutive_free(count: int) -> int:
    for _ in range(100):
        first = free_port()
        if first + count < 65535 and not any(port_in_use(first + i) for i in range(count)):
            return first
    raise ServiceError(f"no {count} consecutive free ports on 127.0.0.1")


def _state(folder: Path) -> dict[str, Any]:
    """The deployment's credentials and ports: generated at the first `up`, kept after."""
    path = folder / "state.json"
    state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    creds = credentials(state)
    creds.setdefault("role_password", secrets.token_urlsafe(18))
    if "ports" not in state:
        state["ports"] = {
            "pg": free_port(),
            "s3": free_port(),
            "code": _consecutive_free(LOCATIONS),
            "webserver": free_port(),
            "weed": {name: free_port() for name in WEED_PORTS},
        }
    state["ports"].setdefault("broker", free_port())  # a deployment made before workers
    creds.setdefault("broker_password", secrets.token_urlsafe(24))
    write_private_file(path, json.dumps(state, indent=2))
    return state


def _env_line(key: str, value: str) -> str:
    if "\n" in value:
        raise ServiceError(f"{key}: a value over several lines cannot go in an env file")
    return f"{key}={value}"


def _write_env(path: Path, values: dict[str, str]) -> None:
    lines = ["# Written by `phlo deploy compose up`: secrets, owner only."]
    lines += [_env_line(key, value) for key, value in values.items()]
    write_private_file(path, "\n".join(lines) + "\n")


def docker_socket() -> str:
    """The engine's socket on this host, as the client reaches it (DOCKER_HOST or Docker's
    default), for the containers that launch runs."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        raise ServiceError(
            f"runs in containers need the engine's unix socket, not DOCKER_HOST={host}: "
            "use --run-launcher process"
        )
    return host.removeprefix("unix://")


def compose_up(
    settings: PhloSettings,
    extra_env: dict[str, str] | None = None,
    progress: Progress | None = None,
    *,
    dist: Path = REPO_ROOT / "dist",
    timeout: float = 300,
    run_launcher: str = "docker",
    workers: int = 0,
) -> Deployment:
    """Images (built if missing), credentials, the env files and S3 configuration, then
    `docker-compose up -d`; returns when the webserver has loaded every code location.
    `extra_env`: more settings for the phlo containers (the locations' own, say; none of
    RESERVED);
    `run_launcher`: where the daemon and the UI run runs, a container each ("docker") or the
    location's code server ("process");
    `workers`: with 1 or more, a Redis broker and that many Celery worker containers, which
    execute the steps of those runs (infra/docker-compose.workers.yml)."""
    from phlo_core.services.control import profile_values
    from phlo_core.services.s3 import s3_command

    tell = progress or (lambda _: None)
    started = time.monotonic()
    if not engine_answers():
        raise ServiceError("no Docker engine answers: `make docker-up` starts one")
    images = {**server_images(tell), "phlo": phlo_image(dist, tell)}
    folder = compose_dir(settings)
    folder.parent.mkdir(parents=True, exist_ok=True)
    own_folder(folder)
    if run_launcher not in RUN_LAUNCHERS:
        raise ServiceError(f"no run launcher {run_launcher!r}: one of {', '.join(RUN_LAUNCHERS)}")
    socket = docker_socket() if run_launcher == "docker" else ""
    state = _state(folder)
    creds, ports = state["credentials"], state["ports"]
    where = Layout(folder / "services", folder / "services" / "postgres")
    own_folder(where.root)
    command = s3_command(where, ports["s3"], ports["weed"], creds, WEED_IN_IMAGE)
    env_file, settings_file = folder / "compose.env", folder / "settings.env"
    # phlo's settings in its containers: the main profile on these servers, as `phlo services
    # up` writes it for its own, then the user's.
    # With workers, the broker too: the profile then runs its steps there (PHLO_EXECUTOR).
    served = {"credentials": creds, "pg_port": ports["pg"], "s3_port": ports["s3"]}
    if workers:
        served["broker_port"] = ports["broker"]
    profile = profile_values(served, "main")
    runs: dict[str, str] = {"PHLO_RUN_LAUNCHER": run_launcher}
    if run_launcher == "docker":
        dagster_url = profile["PHLO_DAGSTER_POSTGRES_URL"].split("://", 1)[1]
        runs["PHLO_DAGSTER_POSTGRES_URL"] = DOCKER_RUNS_URL_SCHEME + dagster_url
        runs["PHLO_RUN_IMAGE"] = images["phlo"]
    broker_config = folder / "broker.conf"
    if workers:
        from phlo_core.services.broker import broker_config as redis_config

        write_private_file(
            broker_config,
            redis_config("/var/lib/phlo-broker", ports["broker"], creds["broker_password"]),
        )
    _write_env(settings_file, {**profile, **runs, **(extra_env or {})})
    values = {
        # What the compose file interpolates.
        "PHLO_IMAGE": images["phlo"],
        "PHLO_POSTGRES_IMAGE": images["postgres"],
        "PHLO_SEAWEEDFS_IMAGE": images["seaweedfs"],
        "PHLO_SETTINGS_ENV": str(settings_file),
        "PHLO_DOCKER_SOCKET": socket,
        "PHLO_PG_PORT": str(ports["pg"]),
        "PHLO_PG_SUPERUSER_PASSWORD": creds["pg_password"],
        "PHLO_PG_PASSWORD": creds["role_password"],
        "PHLO_S3_PORT": str(ports["s3"]),
        "PHLO_S3_COMMAND": shlex.join(command[1:]),
        "PHLO_S3_CONFIG_DIR": str(where.s3_dir),
        **{f"PHLO_CODE_PORT_{i}": str(ports["code"] + i) for i in range(LOCATIONS)},
        "PHLO_WEBSERVER_PORT": str(ports["webserver"]),
        "PHLO_REDIS_IMAGE": images["redis"],
        "PHLO_BROKER_CONFIG": str(broker_config),
        "PHLO_BROKER_PORT": str(ports["broker"]),
    }
    _write_env(env_file, values)
    steps = f"; steps on {workers} Celery worker(s)" if workers else ""
    tell(
        f"starting the deployment ({COMPOSE_FILE.relative_to(REPO_ROOT)}; runs: {run_launcher}"
        f"{steps})"
    )
    scale = ["--scale", f"worker={workers}"] if workers else []
    _compose(settings, "up", "-d", "--remove-orphans", *scale)
    webserver = f"http://127.0.0.1:{ports['webserver']}"
    _wait_for_locations(webserver, timeout, tell)
    return Deployment(webserver, str(settings_file), images, round(time.monotonic() - started, 1))


def _wait_for_locations(webserver: str, timeout: float, tell: Progress) -> None:
    import httpx

    query = (
        "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
        "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
    )
    deadline = time.monotonic() + timeout
    last = "the webserver does not answer yet"
    while time.monotonic() < deadline:
        try:
            answer = httpx.post(f"{webserver}/graphql", json={"query": query}, timeout=10)
            entries = answer.json()["data"]["workspaceOrError"]["locationEntries"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            time.sleep(1)
            continue
        failed = [
            f"{e['name']}: {e['locationOrLoadError'].get('message', '?').splitlines()[0]}"
            for e in entries
            if (e.get("locationOrLoadError") or {}).get("__typename") == "PythonError"
        ]
        loading = [e["name"] for e in entries if e["loadStatus"] != "LOADED"]
        if entries and not loading and not failed:
            tell(f"webserver on {webserver}: {len(entries)} code locations loaded")
            return
        if failed and not loading:
            # Asked before that code server answered (or it failed): ask again, until time
            # runs out (the last error is then the message).
            last = f"a code location failed to load: {failed[0]}"
            reload = "mutation { reloadWorkspace { __typename } }"
            with suppress(httpx.HTTPError):
                httpx.post(f"{webserver}/graphql", json={"query": reload}, timeout=30)
        else:
            last = f"loading {', '.join(loading) or 'the workspace'}"
        time.sleep(2)
    raise ServiceError(f"the deployment did not come up within {timeout:.0f} s ({last})")


def run_label(settings: PhloSettings) -> str:
    """The label (key=value) of the containers this deployment's runs were launched in."""
    url = _deployed_settings(settings).get("PHLO_DAGSTER_POSTGRES_URL") or ""
    return f"{RUN_CONTAINER_LABEL}={instance_label(url)}"


def compose_down(settings: PhloSettings, *, purge: bool = False) -> None:
    """Stop and remove the deployment's containers (`purge`: its database volume and its
    folder, credentials included, too)."""
    folder = compose_dir(settings)
    if not (folder / "compose.env").exists():
        return
    _compose(settings, "down", *(["-v"] if purge else []))
    # The containers of its runs launched in their own (kept after the run for `docker logs`).
    runs = docker("ps", "-aq", "--filter", f"label={run_label(settings)}").split()
    if runs:
        docker("rm", "-f", *runs)
    if purge:
        shutil.rmtree(folder)
