"""`phlo server status|stop`: this user's warm servers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cyclopts import App

from phlo_cli.common import (
    EXIT_FAILED,
    err,
)

if TYPE_CHECKING:  # for annotations only: these modules load inside the commands
    pass


server_app = App(
    name="server",
    help="The warm process that runs `phlo materialize` and `phlo backfill` without their "
    "start-up cost (PHLO_SERVER=0 turns it off).",
)


@server_app.command(name="status")
def server_status() -> int:
    """This user's phlo servers: process id, code version, memory, age and socket. Each serves
    one version of the code (any settings), and exits after PHLO_SERVER_IDLE_SECONDS (600)
    without a command."""
    from phlo_cli import server
    from phlo_cli.render import duration
    from phlo_core.private_folder import NotPrivateError

    try:
        servers = server.running()
    except NotPrivateError as exc:
        err(f"no phlo server can run here: {exc}")
        return EXIT_FAILED
    for found in servers:
        state = "  stopping (no new commands)" if found.stopping else ""
        memory, age = found.memory_mb(), found.age_seconds()
        print(
            f"pid {found.pid}  code {found.code_version}"
            f"  {f'{memory:.0f} MB' if memory is not None else '? MB'}"
            f"  up {duration(age) if age is not None else '?'}"
            f"  {found.socket}  (log: {found.log}){state}"
        )
    if not servers:
        print("no phlo server running")
    return 0


@server_app.command(name="stop")
def server_stop() -> int:
    """Stop this user's phlo servers (commands they are running finish first), and forget the
    settings a server could not serve (its log says why), so that the next command tries again."""
    from phlo_cli import server
    from phlo_core.private_folder import NotPrivateError

    try:
        print(f"stopped {server.stop_all()} phlo server(s)")
    except NotPrivateError as exc:
        err(f"no phlo server can run here: {exc}")
        return EXIT_FAILED
    return 0
