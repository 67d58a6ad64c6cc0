"""The integration tests' servers: a real PostgreSQL 15 and a real S3 server (SeaweedFS), either
in containers (testcontainers, from the images phlo builds here: phlo_core.services.images) when
a Docker engine answers, or as `phlo services up` runs them on the machine when none does. Both
give the same thing: `provision(profile)` makes a fresh profile's databases and S3 prefix and
returns its settings.

Which: PHLO_TEST_SERVERS=containers|local; unset, containers when an engine answers. CI asks for
containers (`make docker-up` starts the engine).

Containers use the host's network (no bridge here) on free loopback ports, with credentials
generated for the test run. SeaweedFS runs the command line `phlo services up` runs, its
configuration (S3 keys, mutual TLS on its internal ports, signing keys) written by phlo's own
code into a folder mounted at the same path. Testcontainers' reaper (Ryuk) is an image that
cannot be pulled here: it is off, and the fixture removes its containers itself, after failed
tests too; containers left by a test session that was killed are removed by the next one (their
`phlo.tests.pid` label names a process that is gone).
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol

from phlo_core.services.layout import (
    WEED_PORTS,
    Layout,
    ServiceError,
    credentials,
    free_port,
)
from phlo_core.services.s3 import weed_failure
from phlo_core.settings import PhloSettings, load_settings

LABEL = "phlo.tests.pid"
WEED_IN_IMAGE = "/usr/local/bin/weed"


class Servers(Protocol):
    kind: str  # "containers" | "local"

    def provision(self, profile: str) -> dict[str, str]: ...


def wanted() -> str:
    """containers | local, from PHLO_TEST_SERVERS (unset: containers when an engine answers)."""
    from phlo_core.services.images import engine_answers

    choice = os.environ.get("PHLO_TEST_SERVERS", "")
    if choice not in ("", "containers", "local"):
        raise ValueError(f"PHLO_TEST_SERVERS={choice!r}: containers or local")
    if choice:
        return choice
    return "containers" if engine_answers() else "local"


class LocalServers:
    kind = "local"

    def __init__(self, settings: PhloSettings) -> None:
        self.settings = settings

    def provision(self, profile: str) -> dict[str, str]:
        from phlo_core.services.control import provision

        return provision(self.settings, profile)


@contextmanager
def local_servers(root: Path) -> Iterator[LocalServers]:
    """`phlo services up` in a home of its own; down and purged after."""
    from phlo_core.services import control

    settings = load_settings(phlo_home=root / "phlo")
    control.up(settings)
    try:
        yield LocalServers(settings)
    finally:
        # Purged: as root, PostgreSQL's files live outside the home (services.py says why).
        control.down(settings, purge=True)
        shutil.rmtree(settings.home, ignore_errors=True)


class ContainerServers:
    kind = "containers"

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def provision(self, profile: str) -> dict[str, str]:
        from phlo_core.services.control import profile_values
        from phlo_core.services.postgres import pg_provision

        creds = self.state["credentials"]
        pg_provision(self.state["pg_port"], creds["pg_password"], creds["role_password"], [profile])
        return profile_values(self.state, profile)


def _docker_client() -> Any:
    import docker

    return docker.from_env()


def remove_stale_containers() -> list[str]:
    """Containers of test sessions whose process is gone (killed before its teardown)."""
    removed = []
    for container in _docker_client().containers.list(all=True, filters={"label": LABEL}):
        pid = int(container.labels.get(LABEL, "0") or 0)
        if pid > 0 and Path(f"/proc/{pid}").exists():
            continue
        container.remove(force=True, v=True)
        removed.append(container.name)
    return removed


def _last_lines(log: str) -> str:
    return " / ".join(log.strip().splitlines()[-3:])


def _wait(
    what: str,
    answers: Any,
    container: Any,
    seconds: float = 60,
    reason: Callable[[str], str] = _last_lines,
) -> float:
    """Seconds until `answers()`; ServiceError when the container exits (with `reason` found
    in its log) or time runs out."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if answers():
            return time.monotonic() - started
        wrapped = container.get_wrapped_container()
        wrapped.reload()
        if wrapped.status in ("exited", "dead"):
            told = reason(wrapped.logs().decode(errors="replace")) or "(nothing logged)"
            raise ServiceError(f"{what}'s container exited: {told}")
        time.sleep(0.1)
    raise ServiceError(f"{what}'s container did not answer within {seconds:.0f} s")


@contextmanager
def container_servers(root: Path) -> Iterator[ContainerServers]:
    """PostgreSQL and SeaweedFS containers from phlo's images; removed after, whatever
    happened."""
    os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"  # before testcontainers reads it
    from testcontainers.core.container import DockerContainer

    from phlo_core.services.images import server_images
    from phlo_core.services.postgres import _pg_connect, pg_provision
    from phlo_core.services.s3 import s3_bucket_answers, s3_command

    remove_stale_containers()
    tags = server_images()
    state: dict[str, Any] = {"pg_port": free_port(), "s3_port": free_port()}
    creds = credentials(state)
    creds["role_password"] = secrets.token_urlsafe(18)
    labels = {LABEL: str(os.getpid())}
    started: list[Any] = []
    try:
        postgres = (
            DockerContainer(tags["postgres"])
            .with_env("PGPORT", str(state["pg_port"]))
            .with_env("POSTGRES_PASSWORD", creds["pg_password"])
            .with_kwargs(network_mode="host", labels=labels)
        )
        started.append(postgres.start())

        def pg_answers() -> bool:
            try:
                _pg_connect(state["pg_port"], creds["pg_password"]).close()
            except Exception:  # noqa: BLE001 (not yet: any refusal)
                return False
            return True

        state["pg_seconds"] = _wait("PostgreSQL", pg_answers, postgres)
        pg_provision(state["pg_port"], creds["pg_password"], creds["role_password"], [])

        where = Layout(root / "services", root / "services" / "postgres")
        where.root.mkdir(parents=True, mode=0o700)
        ports = {name: free_port() for name in WEED_PORTS}
        state["weed_ports"] = ports
        command = s3_command(where, state["s3_port"], ports, creds, WEED_IN_IMAGE)
        folder = str(where.s3_dir)
        s3 = (
            DockerContainer(tags["seaweedfs"])
            .with_command(command[1:])
            .with_volume_mapping(folder, folder, "rw")
            .with_kwargs(network_mode="host", labels=labels, working_dir=folder)
        )
        started.append(s3.start())
        state["s3_seconds"] = _wait(
            "SeaweedFS", lambda: s3_bucket_answers(state["s3_port"], creds), s3, reason=weed_failure
        )
        yield ContainerServers(state)
    finally:
        for container in reversed(started):
            with suppress(Exception):
                container.get_wrapped_container().remove(force=True, v=True)
