"""`phlo ui` and `phlo docs`: Dagster's UI and dbt's documentation, served on loopback."""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING

from phlo_cli.common import (
    EXIT_FAILED,
    UsageError,
    command_settings,
    err,
    shown,
)

if TYPE_CHECKING:  # for annotations only: these modules load inside the commands
    pass


def ui(*, demo: bool = False, port: int = 3000, host: str = "127.0.0.1") -> int:
    """Dagster's UI (webserver and daemon) on this home's instance and workspace, until Ctrl-C.

    Parameters
    ----------
    demo
        The demo's home (PHLO_HOME/demo), with its sample sources served, so that runs launched
        from the UI ingest sample data.
    port
        The webserver's port.
    host
        The address it listens on (loopback by default: the UI has no login).
    """
    import threading
    from contextlib import ExitStack

    from phlo_core.demo import demo_settings, sample_sources
    from phlo_core.services.layout import port_in_use
    from phlo_core.services.ui import UiError, start_ui

    if not 1024 <= port <= 65535:
        raise UsageError(f"--port must be from 1024 to 65535, not {port}")
    if port_in_use(port):
        raise UsageError(f"port {port} is in use: give another with --port")
    settings = command_settings()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    with ExitStack() as stack:
        extra = stack.enter_context(sample_sources(settings)) if demo else {}
        home = demo_settings(settings) if demo else settings
        try:
            started = start_ui(home, host=host, port=port, extra_env=extra)
        except UiError as exc:
            err(str(exc))
            return EXIT_FAILED
        stack.callback(started.stop)
        print(
            f"Dagster's UI for PHLO_HOME={shown(home.home)}"
            + (" (SAMPLE DATA)" if demo else "")
            + f": {started.url}  starting, about 20 s; Ctrl-C stops it (logs: "
            + f"{shown(started.logs)})",
            file=sys.stderr,
            flush=True,
        )
        ready = False
        while not stop.wait(0.5):
            if ended := started.exited():
                name, code = next(iter(ended.items()))
                err(f"the {name} ended (exit code {code}): see {started.logs / name}.log")
                return EXIT_FAILED
            if not ready and (ready := started.answers()):
                print(f"ready: {started.url}", file=sys.stderr, flush=True)
        print("stopping the UI ...", file=sys.stderr, flush=True)
    print("UI stopped", file=sys.stderr)
    return 0


def docs(*, serve: bool = False, port: int = 8580, host: str = "127.0.0.1") -> int:
    """dbt's documentation of every dbt project (models, columns, tests, lineage, the
    lakehouse's column types): one self-contained page per project under PHLO_HOME/docs.

    Parameters
    ----------
    serve
        Also serve them on loopback until Ctrl-C.
    port
        The port to serve on.
    host
        The address to serve on.
    """
    import threading

    from phlo_core.dbt.docs import build_docs, serve_docs
    from phlo_core.dbt.runner import DbtError
    from phlo_core.lakehouse.connect import LakehouseError

    if serve and not 1024 <= port <= 65535:
        raise UsageError(f"--port must be from 1024 to 65535, not {port}")
    settings = command_settings()
    try:
        pages = build_docs(settings)
    except (DbtError, LakehouseError) as exc:
        err(str(exc))
        return EXIT_FAILED
    for project, page in pages.items():
        print(f"{project}: {shown(page)}")
    if not serve:
        return 0
    try:
        server = serve_docs(settings, host, port)
    except OSError as exc:
        raise UsageError(f"cannot serve on {host}:{port}: {exc.strerror}") from None
    for project, page in pages.items():
        print(f"{project}: http://{host}:{port}/{project}/{page.name}", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print("serving the docs until Ctrl-C", file=sys.stderr, flush=True)
    stop.wait()
    server.shutdown()
    return 0
