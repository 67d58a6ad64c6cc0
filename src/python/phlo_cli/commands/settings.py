"""`phlo settings`: the settings phlo and the workspace's code locations read."""

from __future__ import annotations

from cyclopts import App

from phlo_cli.common import EXIT_FAILED, err

settings_app = App(
    name="settings",
    help="The settings of phlo and of each code location (environment variables or .env).",
)


@settings_app.command(name="example")
def settings_example() -> int:
    """Every setting of phlo and of each code location in the workspace, documented, with its
    default: `phlo settings example > .env`, then edit."""
    from phlo_core.settings import get_settings
    from phlo_core.workspace import WorkspaceError, env_example

    try:
        text = env_example(get_settings())
    except WorkspaceError as exc:
        err(str(exc))
        return EXIT_FAILED
    print(text, end="")
    return 0
