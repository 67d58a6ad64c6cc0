"""`phlo deploy`: what a deployment derives from the workspace file (the locations served as
gRPC code servers)."""

from __future__ import annotations

from pathlib import Path

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
    hosts-by-name
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
