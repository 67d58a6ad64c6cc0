"""`phlo docs`: dbt's documentation site for every dbt project of the workspace.

dbt writes it (`dbt docs generate --static`): one self-contained HTML page per project, with
every model, column, description, test and the lineage graph, and the column types of the
tables the lakehouse holds (dbt's catalog, read through the same profile as the runs). A page
opens from disk without a server; `serve` offers them on loopback too.
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

from phlo_core.dbt.project import prepare_project
from phlo_core.dbt.runner import invoke_dbt
from phlo_core.settings import PhloSettings
from phlo_core.workspace import DBT_ROOT

PAGE = "static_index.html"


def dbt_projects() -> list[Path]:
    """Every dbt project beside the locations (the shared package is not one to document)."""
    return sorted(
        path.parent for path in DBT_ROOT.glob("*/dbt_project.yml") if path.parent.name != "packages"
    )


def docs_folder(settings: PhloSettings) -> Path:
    return settings.home / "docs"


def build_docs(settings: PhloSettings) -> dict[str, Path]:
    """Project name -> its documentation page, written under PHLO_HOME/docs/<project>/."""
    pages = {}
    for project in dbt_projects():
        prepare_project(project, settings)
        target = docs_folder(settings) / project.name
        command = ["docs", "generate", "--static", "--target-path", str(target)]
        invoke_dbt(command, project, settings)
        pages[project.name] = target / PAGE
    return pages


def serve_docs(settings: PhloSettings, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """An HTTP server of PHLO_HOME/docs on host:port, serving in a thread (`shutdown` ends it)."""
    handler = functools.partial(_QuietHandler, directory=str(docs_folder(settings).absolute()))
    server = http.server.ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # a line per request would bury the one line that says where the docs are
