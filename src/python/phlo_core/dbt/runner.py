"""dbt in this process: one command at a time, its failures as one line, Ctrl-C handled.

dbt runs in-process with a manifest parsed once per process. A `dbt build` subprocess re-parses
the whole project on every run (new vars defeat partial parsing): about 11 s a run on two
cores, against 2-3 s in-process.
"""

import contextlib
import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phlo_core.settings import PhloSettings

if TYPE_CHECKING:
    from dbt.cli.main import dbtRunnerResult
    from dbt.contracts.graph.manifest import Manifest


class DbtError(RuntimeError):
    """dbt could not parse or build a project; the message carries dbt's own reason."""


def target_path(project_dir: Path, settings: PhloSettings) -> Path:
    return settings.dbt_dir / "target" / project_dir.name


@contextlib.contextmanager
def _dbt_interrupts() -> Iterator[threading.Event]:
    """While dbt runs, Ctrl-C (SIGINT, or SIGTERM) raises KeyboardInterrupt: the one exception
    dbt handles, by cancelling its DuckDB queries and joining its worker threads. Dagster's own
    handler raises DagsterExecutionInterruptedError, which dbt does not handle: its worker
    thread stays inside DuckDB and C++ aborts the process when Python exits (exit 134).
    Further signals are ignored while dbt cleans up. The event records the interrupt, since
    dbt may swallow it (while parsing) or fail while cancelling."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        interrupted.set()
        raise KeyboardInterrupt

    signals = (signal.SIGINT, signal.SIGTERM)
    previous = [signal.getsignal(signum) for signum in signals]
    for signum in signals:
        signal.signal(signum, interrupt)
    try:
        yield interrupted
    finally:
        for signum, handler in zip(signals, previous, strict=True):
            if handler is not None:
                signal.signal(signum, handler)


@contextlib.contextmanager
def secrets_for_dbt(settings: PhloSettings) -> Iterator[None]:
    """The profile's secrets in the environment while dbt runs (it reads them there), and only
    then: what was there before is put back."""
    from phlo_core.dbt.profile import secret_environment

    secrets = secret_environment(settings)
    before = {name: os.environ.get(name) for name in secrets}
    os.environ.update(secrets)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_dbt_lock = threading.Lock()
_parsed: dict[tuple[Path, Path], "Manifest"] = {}


_WRAPPER_LINE = re.compile(r"^(Runtime|Database|Compilation|Parsing) Error in ", re.IGNORECASE)


def cause_line(text: str | None) -> str:
    """The line that says what went wrong: dbt puts 'Runtime Error in model x (path)' first and
    the cause ('database is locked', a failing test's count) on the next line."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    causes = [line for line in lines if not _WRAPPER_LINE.match(line)]
    return (causes or lines or ["failed"])[0]


def invoke_dbt(args: list[str], project_dir: Path, settings: PhloSettings, **runner: Any) -> Any:
    """Run one dbt command in this process; raise DbtError with dbt's reason if it fails."""
    from dbt.cli.main import dbtRunner

    log_dir = target_path(project_dir, settings) / "logs"
    full = [
        # Nothing on the console: phlo reports dbt's results itself (a model's error, a failing
        # test), and a build met by another writer's commit is built again, not an error to
        # show. dbt's own log file (every statement it ran) only with PHLO_DEBUG: dbt formats,
        # scrubs and flushes a line for each of its events whatever the file's level, about
        # 0.4 s of a day's run (some 2,200 events).
        "--log-level",
        "none",
        "--log-level-file",
        "debug" if settings.phlo_debug else "none",
        "--no-use-colors",
        "--no-send-anonymous-usage-stats",
        "--log-path",
        str(log_dir),
        # dbt's static parser (dbt-extractor, Rust) starts a rayon thread pool the first time
        # it parses: a warm server that parsed at start-up forks children whose parse then
        # waits forever on the pool's threads, which did not survive the fork. Jinja renders
        # every model instead (partial parsing keeps that to the files that changed).
        "--no-static-parser",
        *args,
        "--project-dir",
        str(project_dir),
        "--profiles-dir",
        str(settings.dbt_dir),
    ]
    with _dbt_lock, secrets_for_dbt(settings), _dbt_interrupts() as interrupted:
        result: dbtRunnerResult = dbtRunner(**runner).invoke(full)
    # dbtRunner returns even KeyboardInterrupt as a result; an interrupt must reach Dagster.
    if interrupted.is_set() or isinstance(result.exception, KeyboardInterrupt):
        raise KeyboardInterrupt from result.exception
    if result.exception is not None:
        reason = cause_line(str(result.exception)) if str(result.exception).strip() else None
        raise DbtError(
            f"dbt {args[0]} failed for {project_dir.name}: "
            f"{reason or type(result.exception).__name__}"
        ) from result.exception
    return result


def parsed_manifest(project_dir: Path, settings: PhloSettings) -> "Manifest":
    """The project's parsed manifest, once per process (partial parsing makes it quick)."""
    key = (project_dir, settings.home)
    if key not in _parsed:
        directory = target_path(project_dir, settings)
        parsed = invoke_dbt(
            ["parse", "--no-write-json", "--target-path", str(directory)], project_dir, settings
        )
        _parsed[key] = parsed.result
    return _parsed[key]


def remember_manifest(project_dir: Path, settings: PhloSettings, manifest: "Manifest") -> None:
    """Keep a manifest parsed in this process (by `prepare_project`) for later invocations."""
    _parsed[(project_dir, settings.home)] = manifest
