"""`phlo`, the entry point: a command phlo serves (`phlo_cli.server.SERVED`) goes to this user's
warm server when one can take it; every other command line, and any the server cannot take,
runs here (`phlo_cli.cli`).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    if argv is None and sys.argv[1:2]:
        from phlo_cli import server  # small: the other commands start without Dagster

        if sys.argv[1] in server.SERVED and server.wanted(sys.argv[1:]):
            served = server.run_through(sys.argv[1:])
            if served is not None:
                sys.exit(served)
    from phlo_cli.cli import run

    if argv is not None:
        run(argv)
        return
    # The command line of a `phlo` process: once the command is done, the process ends without
    # tearing its interpreter down (1.4 s after a run: `phlo_core.process_exit`).
    from phlo_core.process_exit import exit_code, exit_now

    try:
        run(sys.argv[1:])
    except SystemExit as exc:
        exit_now(exit_code(exc))
    exit_now(0)
