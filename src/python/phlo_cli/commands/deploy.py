"""`phlo deploy`: what a deployment derives from the workspace file (the locations served as
gRPC code servers)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from cyclopts import App

from phlo_cli.common import EXIT_FAILED, UsageError, err, shown

deploy_app = App(
    name="deploy",
    help="What a deployment of the workspace's code locations needs, derived from the workspace.",
)


@deploy_app.command(name="workspace")
def deploy_workspace(
    *,
    host: str = "127.0.0.1",
    port: int = 4100,
    hosts_by_name: bool = False,
    out: Path | None = None,
) -> int:
    """The workspace file for Dagster's webserver and daemon when each code location of
    PHLO_WORKSPACE runs as its own gRPC server (from its PEX, or a container), with the
    commands that start them.

    Parameters
    ----------
    host
        Where the webserver and daemon reach every location's server (ports consecutive from
        --port).
    port
        The first location's port.
    hosts_by_name
        Each location's server at a host named after its location, all on --port (the
        service names of a compose file).
    out
        Write the file here instead of printing it.
    """
    from phlo_core.settings import get_settings
    from phlo_core.workspace import WorkspaceError, grpc_workspace

    if not 1 <= port <= 65535:
        raise UsageError(f"--port must be from 1 to 65535, not {port}")
    try:
        text = grpc_workspace(get_settings(), host=None if hosts_by_name else host, port=port)
    except WorkspaceError as exc:
        err(str(exc))
        return EXIT_FAILED
    if out is None:
        print(text, end="")
        return 0
    try:
        out.write_text(text)
    except OSError as exc:
        raise UsageError(f"cannot write {shown(out)}: {exc.strerror}") from None
    print(f"wrote {shown(out)}")
    return 0


compose_app = App(
    name="compose",
    help=(
        "The production profile on this Docker host (infra/docker-compose.yml), from images "
        "built here: PostgreSQL, S3, a code server per location, Dagster's webserver and daemon."
    ),
)
deploy_app.command(compose_app)


@compose_app.command(name="up")
def compose_up(
    *,
    env_file: Path | None = None,
    timeout: int = 300,
    run_launcher: Literal["docker", "process"] = "docker",
    workers: int = 0,
) -> int:
    """Build the images if missing (the PEXes from `make pex`), generate the credentials and
    ports once (PHLO_HOME/deploy/compose, owner only), start everything on the host's network
    and wait until the webserver has loaded every code location. Needs a Docker engine
    (`make docker-up`). Run again to apply new settings or a new build.

    Parameters
    ----------
    env_file
        More settings for the phlo containers, KEY=VALUE lines (the locations' own: their
        sources' URLs and secrets, as in each location's env.example).
    timeout
        Seconds to wait for the deployment to come up.
    run_launcher
        Where runs launched from the UI or by the daemon run: docker, a container each from
        the phlo image (Dagster's DockerRunLauncher; the webserver and daemon get the engine's
        socket), or process, a process of the location's code server.
    workers
        With 1 or more: a Redis broker and that many Celery worker containers (`phlo worker
        start`), on which those runs execute their steps (PHLO_EXECUTOR=celery).
    """
    from phlo_core.services.compose import RESERVED
    from phlo_core.services.compose import compose_up as up
    from phlo_core.services.layout import ServiceError
    from phlo_core.settings import get_settings

    extra = _read_env_file(env_file) if env_file is not None else {}
    reserved = sorted(RESERVED & {key.upper() for key in extra})
    if reserved:
        raise UsageError(
            f"{shown(env_file or Path())} sets {', '.join(reserved)}, which `up` sets itself "
            "(--run-launcher chooses where runs go, --workers where their steps go): remove it"
        )
    if not 0 <= workers <= 64:
        raise UsageError(f"--workers must be from 0 to 64, not {workers}")
    if timeout < 10:
        raise UsageError(f"--timeout must be at least 10 seconds, not {timeout}")
    try:
        deployed = up(
            get_settings(),
            extra,
            _progress,
            timeout=timeout,
            run_launcher=run_launcher,
            workers=workers,
        )
    except ServiceError as exc:
        err(str(exc))
        return EXIT_FAILED
    print(f"Dagster's UI: {deployed.webserver} (up in {deployed.seconds:.0f}s)")
    print(f"settings of the deployment: {shown(Path(deployed.env_file))}")
    return 0


@compose_app.command(name="down")
def compose_down(*, purge: bool = False) -> int:
    """Stop and remove the deployment's containers.

    Parameters
    ----------
    purge
        Also delete its databases (the PostgreSQL volume) and its credentials.
    """
    from phlo_core.services.compose import compose_down as down
    from phlo_core.services.layout import ServiceError
    from phlo_core.settings import get_settings

    try:
        down(get_settings(), purge=purge)
    except ServiceError as exc:
        err(str(exc))
        return EXIT_FAILED
    print("deployment stopped" + (" and purged" if purge else ""))
    return 0


def _read_env_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {shown(path)}: {exc.strerror}") from None
    values = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise UsageError(f"{shown(path)}:{number}: not KEY=VALUE")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def _progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


@deploy_app.command(name="k8s-secret")
def deploy_k8s_secret(*, out: Path, name: str = "phlo-settings") -> int:
    """Write the production settings as a Kubernetes Secret manifest, for the pods of
    infra/helm/values.yaml (code servers, run jobs, Celery workers), then
    `kubectl apply -f OUT`. Holds phlo's and every location's settings set here (environment,
    .env, PHLO_HOME/services.env), not this machine's paths. The file is the owner's alone;
    only the names are printed.

    Parameters
    ----------
    out
        The manifest file to write (JSON, which kubectl reads as YAML).
    name
        The Secret's name (the values file reads `phlo-settings`).
    """
    from phlo_core.services.kubernetes import write_settings_secret
    from phlo_core.settings import SettingsError, get_settings

    try:
        names = write_settings_secret(get_settings(), out, name)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        err(f"cannot write {out}: {exc.strerror or exc}")
        return EXIT_FAILED
    print(f"{shown(out)}: Secret {name} with {', '.join(names) or 'no setting'}", file=sys.stderr)
    return 0
