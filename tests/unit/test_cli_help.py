"""Every argument and option of every phlo command says what it does in `--help` (a docstring
entry spelled unlike its parameter, `env-file` for `env_file`, is silently dropped)."""

from __future__ import annotations

import io
import re

from cyclopts import App
from rich.console import Console

from phlo_cli.cli import app

ROW = re.compile(r"│ (?:\* )?\s*(\S.*?)\s{2,}(.*?)\s*│$")
NOT_HELP = re.compile(r"\[(default|choices|required)[^\]]*\]")


def commands(parent: App, path: list[str]) -> list[list[str]]:
    found: list[list[str]] = []
    for name in list(parent):
        child = parent[name]
        if name.startswith("-") or child is parent:
            continue
        if child.default_command is not None:
            found.append([*path, name])
        found += commands(child, [*path, name])
    return found


def parameters(path: list[str]) -> dict[str, str]:
    """Each parameter's first name in the command's help, with its help text."""
    shown = io.StringIO()
    app.help_print(path, console=Console(file=shown, width=250))
    found = {}
    for line in shown.getvalue().splitlines():
        row = ROW.match(line)
        if row is not None and (row.group(1).startswith("-") or row.group(1).isupper()):
            found[row.group(1).split()[0]] = NOT_HELP.sub("", row.group(2)).strip()
    return found


def undocumented(path: list[str]) -> list[str]:
    return [name for name, text in parameters(path).items() if not text]


def test_every_parameter_of_every_command_has_help() -> None:
    paths = commands(app, [])
    assert ["deploy", "compose", "up"] in paths and ["materialize"] in paths
    # The help is read as it is drawn: these rows are there to read.
    assert {"--env-file", "--timeout", "--run-launcher"} <= set(
        parameters(["deploy", "compose", "up"])
    )
    assert "SELECTION" in parameters(["materialize"])
    missing = {" ".join(path): undocumented(path) for path in paths}
    assert {command: names for command, names in missing.items() if names} == {}
