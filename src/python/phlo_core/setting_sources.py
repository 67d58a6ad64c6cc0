"""Where phlo's settings come from, read without pydantic.

`PhloSettings` reads each setting from the environment (a variable's name in any case), then
from the env files: PHLO_HOME/services.env (written by `phlo services up`), then `.env` in the
current folder, which wins over it; then the default. PHLO_HOME itself comes from the
environment or `.env`. pydantic-settings takes 0.2 s to import: `raw_setting` reads one value
the same way in milliseconds, for the warm server's client, which needs only the workspace
file's path to find its server (`phlo_cli.server.server_key`).
"""

from __future__ import annotations

import os
from pathlib import Path

SERVICES_ENV = "services.env"  # in PHLO_HOME: the settings `phlo services up` wrote
DOTENV = ".env"  # in the current folder
DEFAULT_HOME = Path(".phlo")


def services_env(home: Path) -> Path:
    """The settings file `phlo services up` writes for the home `home`."""
    return home.expanduser().resolve() / SERVICES_ENV


def env_files(home: Path) -> tuple[Path | str, ...]:
    """The env files PhloSettings reads for the home `home`, the last one winning."""
    services = services_env(home)
    return (services, DOTENV) if services.is_file() else (DOTENV,)


def _environment(name: str) -> str | None:
    found = None
    for key, value in os.environ.items():  # the last of the names that match, as pydantic's
        if key.lower() == name:
            found = value
    return found


def _from_files(name: str, files: tuple[Path | str, ...]) -> str | None:
    """As pydantic-settings merges env files: every name lowercased, a later file's line
    replacing an earlier one's, a name without `=` (None) too."""
    from dotenv import dotenv_values  # what pydantic-settings parses env files with

    merged: dict[str, str | None] = {}
    for file in files:
        path = Path(file).expanduser()
        if path.is_file() or path.is_fifo():
            merged.update(
                (key.lower(), value) for key, value in dotenv_values(path, encoding="utf-8").items()
            )
    return merged.get(name)


def raw_setting(name: str) -> str | None:
    """Setting `name`'s value before validation, from where PhloSettings reads it (None: not
    set anywhere, its default applies)."""
    name = name.lower()
    value = _environment(name)
    if value is not None:
        return value
    home = _environment("phlo_home")
    if home is None:
        home = _from_files("phlo_home", (DOTENV,))
    return _from_files(name, env_files(DEFAULT_HOME if home is None else Path(home)))
