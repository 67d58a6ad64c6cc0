"""The `phlo` command tree (cyclopts) and running one command line: parse, run, exit code.

Each command lives in phlo_cli/commands/<group>.py and imports Dagster, dbt and DuckDB inside
its function, so `phlo --help` stays fast. Exit codes: 0 success, 1 a run or query failed,
2 bad input (usage, selection, date, config), 130 interrupted, 141 the reader went away.
"""

from __future__ import annotations

import os
import sys
from typing import Literal, NoReturn

from cyclopts import App
from cyclopts.exceptions import CycloptsError

from phlo_cli.commands import (
    backfill,
    catalog,
    dashboards,
    demo,
    deploy,
    logs,
    materialize,
    query,
    report,
    server,
    services,
    settings,
    status,
    ui,
    worker,
)
from phlo_cli.common import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    UsageError,
    err,
    exit_now,
)

app = App(
    name="phlo",
    help="Phlo: a data lakehouse on Dagster, dbt and DuckLake.",
    version="0.1.0",
    suppress_keyboard_interrupt=False,  # run() reports Ctrl-C; cyclopts would exit silently
)
app.command(materialize.materialize)
app.command(backfill.backfill_app)
app.command(status.status)
app.command(query.query)
app.command(report.report)
app.command(logs.logs)
app.command(services.services_app)
app.command(dashboards.dashboards_app)
app.command(catalog.catalog_app)
app.command(server.server_app)
app.command(worker.worker_app)
app.command(services.instance)
app.command(services.maintenance)
app.command(ui.ui)
app.command(ui.docs)
app.command(demo.sample_app)
app.command(settings.settings_app)
app.command(deploy.deploy_app)
app.command(demo.demo)


@app.command
def completion(shell: Literal["bash", "zsh", "fish"] = "bash", /) -> int:
    """Print the shell completion script for phlo: `eval "$(phlo completion bash)"` in your
    ~/.bashrc (zsh and fish likewise) completes commands and options.

    Parameters
    ----------
    shell
        The shell the script is for.
    """
    print(app.generate_completion(prog_name="phlo", shell=shell))
    return 0


def _sql_as_positional(tokens: list[str]) -> list[str]:
    """SQL that starts with a comment (`-- report ...`) looks like an option to the parser:
    pass such a token after `--`, where only positionals go."""
    if not tokens or tokens[0] != "query" or "--" in tokens:
        return tokens
    kept: list[str] = []
    sql: list[str] = []
    for token in tokens:
        if token == "-" and kept and kept[-1] in ("-f", "--file"):
            kept[-1] = "--file=-"
        elif token == "-" or (token.startswith("-") and any(c.isspace() for c in token)):
            sql.append(token)
        else:
            kept.append(token)
    return [*kept, "--", *sql] if sql else kept


def _resume_alone(tokens: list[str]) -> list[str]:
    """`phlo backfill --resume` with no id means the latest unfinished backfill."""
    if not tokens or tokens[0] != "backfill" or "--resume" not in tokens:
        return tokens
    at = tokens.index("--resume")
    if at + 1 == len(tokens) or tokens[at + 1].startswith("-"):
        return [*tokens[: at + 1], "latest", *tokens[at + 1 :]]
    return tokens


def run(argv: list[str]) -> NoReturn:
    """Run one command line (without the program's name) and exit with its code."""
    tokens = _resume_alone(_sql_as_positional(argv))
    try:
        code = app(tokens, exit_on_error=False, print_error=False, result_action="return_value")
        sys.stdout.flush()  # here, not at exit: a reader gone before the last buffer is caught
    except CycloptsError as exc:
        message = " ".join(str(exc).split())
        err(f"{message} (see `phlo --help`)")
        sys.exit(EXIT_USAGE)
    except UsageError as exc:
        err(str(exc))
        sys.exit(EXIT_USAGE)
    except BrokenPipeError:
        # The reader went away (`phlo logs | head`): stop quietly, as Unix tools do. Python
        # would flush stdout again at exit and complain: point it at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_BROKEN_PIPE)
    except KeyboardInterrupt as exc:
        run_id = getattr(exc, "run_id", None)
        err(f"interrupted; run {run_id} canceled" if run_id else "interrupted")
        exit_now(EXIT_INTERRUPTED)
    except Exception as exc:
        from phlo_core.redact import redact
        from phlo_core.settings import SettingsError, get_settings

        if isinstance(exc, SettingsError):
            err(str(exc))
            sys.exit(EXIT_USAGE)
        if get_settings().phlo_debug:
            raise
        first = redact((str(exc).strip().splitlines() or [""])[0])
        err(f"{type(exc).__name__}: {first} (PHLO_DEBUG=1 shows the traceback)")
        sys.exit(EXIT_FAILED)
    sys.exit(code if isinstance(code, int) else 0)
