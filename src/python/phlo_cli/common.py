"""What every command shares: exit codes, the one-line error, the settings a command runs
with, progress lines, run outcomes and where an empty answer looked."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from collections.abc import Sequence

    from phlo_core.runs.engine import RunOutcome
    from phlo_core.runs.progress import ProgressCallback
    from phlo_core.services.dashboards import Dashboard
    from phlo_core.settings import PhloSettings


EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a tool whose reader went away


class UsageError(Exception):
    """Bad input from the user: reported on one line, exit code 2."""


def err(message: str) -> None:
    from phlo_core.redact import redact

    print(f"phlo: error: {redact(message)}", file=sys.stderr)


def command_settings(*, writes: bool = True) -> PhloSettings:
    """The settings, PHLO_HOME checked: writable, unless the command only reads."""
    from phlo_core.settings import SettingsError, check_home, get_settings

    try:
        settings = get_settings()
        check_home(settings, writes=writes)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    return settings


def progress_printer(verbose: bool, days_label: str | None = None) -> ProgressCallback:
    """Progress lines on stderr. A range run materializes every asset once per day; unless
    verbose, each asset is reported once, labelled with the whole range."""
    from phlo_core.runs.progress import Progress

    started = time.perf_counter()
    seen: set[str] = set()

    def show(event: Progress) -> None:
        elapsed = f"{time.perf_counter() - started:6.1f}s"
        if event.kind == "materialized":
            label = event.partition if verbose or not days_label else days_label
            partition = f" [{label}]" if label else ""
            if verbose or event.subject not in seen:
                print(f"  {elapsed}  materialized {event.subject}{partition}", file=sys.stderr)
            seen.add(event.subject)
        elif event.kind == "step_start":
            print(f"  {elapsed}  running {event.subject}", file=sys.stderr)
        elif event.kind == "step_failure":
            print(f"  {elapsed}  FAILED {event.subject}", file=sys.stderr)
        elif event.kind == "warning":
            print(f"  {elapsed}  warning {event.subject}: {event.message}", file=sys.stderr)

    return show


def report_outcomes(outcomes: list[RunOutcome]) -> int:
    code = 0
    for outcome in outcomes:
        status = "succeeded" if outcome.success else "FAILED"
        scope = f"for {outcome.days.label()}" if outcome.partitioned else "(rebuilt whole)"
        if outcome.skipped:
            print(f"{outcome.location}: SKIPPED: {len(outcome.assets)} asset(s) {scope}")
        else:
            print(
                f"{outcome.location}: {status}: {len(outcome.assets)} asset(s) {scope} "
                f"in {outcome.seconds:.1f}s (run {outcome.run_id})"
            )
        for asset, summary in outcome.summaries.items():
            print(f"  {asset}: {summary}")
        for error in outcome.errors:
            print(f"  error: {error}", file=sys.stderr)
        for check in outcome.failed_checks:
            about = outcome.check_descriptions.get(check)
            print(f"  failed check: {check}" + (f" ({about})" if about else ""), file=sys.stderr)
        if not outcome.success and not outcome.skipped:
            print(f"  run's log: phlo logs --run-id {outcome.run_id[:8]}", file=sys.stderr)
        if not outcome.success:
            code = EXIT_FAILED
    return code


def demo_hint(settings: PhloSettings, command: str) -> str:
    """Where the demo's data is, when this home has a demo beside it: commands read PHLO_HOME
    (`.phlo` by default), and `phlo demo` writes to PHLO_HOME/demo."""
    demo = settings.home / "demo"
    if not (demo / "dagster").exists():
        return ""
    return f"; the demo's runs are in {shown(demo)}: PHLO_HOME={shown(demo)} phlo {command}"


def read_nothing(settings: PhloSettings, what: str, command: str) -> None:
    """An empty answer says which home it read (and where the demo is), on stderr."""
    print(
        f"{what} in PHLO_HOME={shown(settings.home)}{demo_hint(settings, command)}",
        file=sys.stderr,
    )


def shown(path: Path) -> str:
    """A path as short as it can be shown: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def terminal_width() -> int:
    import shutil

    return shutil.get_terminal_size((100, 24)).columns


def exit_now(code: int) -> NoReturn:
    """Exit; skip interpreter teardown if an interrupt left a thread behind. A Python thread
    that returns from DuckDB while Python finalizes makes C++ abort the process ("terminate
    called without an active exception", exit 134)."""
    import threading

    sys.stdout.flush()
    sys.stderr.flush()
    if threading.active_count() > 1:
        os._exit(code)
    sys.exit(code)


def follow_services(settings: PhloSettings) -> None:
    """DAGSTER_HOME's dagster.yaml for the settings as they read now (the services' or not),
    so that `dagster dev` started next uses the same storage as phlo."""
    from phlo_core.runs.instance import sync_instance_config
    from phlo_core.settings import load_settings

    given = {"phlo_home": settings.phlo_home}
    if settings.dagster_home is not None:
        given["dagster_home"] = settings.dagster_home
    sync_instance_config(load_settings(**given))


def show_dashboards(dashboards: Sequence[Dashboard], state_file: Path, *, as_json: bool) -> None:
    """Each dashboard's title, charts and address; where the login's password is."""
    import json
    from dataclasses import asdict

    from phlo_cli.render import to_table

    if as_json:
        print(json.dumps([asdict(d) for d in dashboards]))
        return
    rows = [(d.title, d.charts, d.url) for d in dashboards]
    print(to_table(["dashboard", "charts", "address"], rows))
    print(
        f"log in as admin; the password is credentials.superset_admin_password in "
        f"{shown(state_file)}",
        file=sys.stderr,
    )
