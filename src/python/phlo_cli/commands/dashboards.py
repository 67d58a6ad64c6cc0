"""`phlo dashboards`: Superset's dashboards as code (the bundle in infra/superset)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

from cyclopts import App, Parameter

from phlo_cli.common import (
    EXIT_FAILED,
    UsageError,
    command_settings,
    err,
    show_dashboards,
    shown,
)

dashboards_app = App(
    name="dashboards",
    help="Superset's dashboards as code: import the repository's bundle, export the UI's edits.",
)


@dashboards_app.command(name="import")
def dashboards_import(
    *,
    demo: bool = False,
    as_json: Annotated[bool, Parameter(name="--json")] = False,
) -> int:
    """Import the dashboards (infra/superset) into the Superset `phlo services up --with
    superset` runs; again: every chart, dataset and dashboard of the bundle replaced by the
    repository's (importing twice changes nothing).

    The dashboards read the marts published to PostgreSQL (PHLO_PUBLISH_POSTGRES_URL); its
    password reaches Superset in the import request only, never a file.

    Parameters
    ----------
    demo
        Read the demo's published marts (`phlo demo` run on the services) instead of yours.
    as_json
        A JSON list of {title, slug, url, charts}.
    """
    from phlo_core.demo import demo_settings
    from phlo_core.services.control import dashboards_import as run_import
    from phlo_core.services.layout import ServiceError, layout

    settings = command_settings()
    try:
        found = run_import(settings, demo_settings(settings) if demo else settings)
    except ServiceError as exc:
        err(str(exc))
        return EXIT_FAILED
    show_dashboards(list(found), layout(settings).state_file, as_json=as_json)
    return 0


@dashboards_app.command(name="export")
def dashboards_export(*, out: Path | None = None) -> int:
    """Write what the running Superset holds (databases, datasets, charts, dashboards) into
    the bundle's folder, so dashboards edited in the UI can be committed. Files it leaves
    unchanged are not rewritten; a database's address stays the bundle's.

    Parameters
    ----------
    out
        The bundle's folder (default: infra/superset of this checkout).
    """
    from phlo_core.services.control import dashboards_export as run_export
    from phlo_core.services.dashboards import BUNDLE_DIR
    from phlo_core.services.layout import ServiceError

    folder = out or BUNDLE_DIR
    if not folder.parent.is_dir():
        raise UsageError(f"--out {folder}: folder {folder.parent} does not exist")
    try:
        changed = run_export(command_settings(writes=False), folder)
    except ServiceError as exc:
        err(str(exc))
        return EXIT_FAILED
    for name in changed:
        print(f"wrote {shown(folder / name)}")
    print(f"{len(changed)} file(s) changed in {shown(folder)}", file=sys.stderr)
    return 0
