"""`phlo ui`: Dagster's webserver and daemon on the settings' instance and workspace.

`dagster dev` is what Dagster offers for this, but it wants an absolute DAGSTER_HOME (the demo's
relative one was refused), reads its workspace from the current folder, and, started without a
terminal, may ignore SIGTERM for 40 s. Here both processes get absolute paths and the settings'
environment, each runs in a process group of its own, and `stop` ends the groups: SIGTERM,
then SIGKILL for what is left after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from phlo_core.runs.instance import sync_instance_config
from phlo_core.settings import PhloSettings
from phlo_core.workspace import workspace_file

GRACE_SECONDS = 20.0


class UiError(RuntimeError):
    """The UI could not be started; one line saying why."""


@dataclass
class Ui:
    url: str
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def answers(self) -> bool:
        """Whether the webserver serves (its /server_info)."""
        try:
            with urllib.request.urlopen(f"{self.url}/server_info", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def exited(self) -> dict[str, int]:
        """Processes that ended on their own: name -> exit code."""
        return {
            name: code
            for name, process in self.processes.items()
            if (code := process.poll()) is not None
        }

    def stop(self) -> None:
        """End both processes and whatever they started (code servers): each group gets
        SIGTERM, then SIGKILL once GRACE_SECONDS have passed."""
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            # The group outlives its leader when a code server lingers: end it too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)


def _program(name: str) -> str:
    found = Path(sys.executable).with_name(name)
    if not found.exists():
        raise UiError(f"{name} is not installed beside {sys.executable}")
    return str(found)


def start_ui(
    settings: PhloSettings, *, host: str, port: int, extra_env: Mapping[str, str] | None = None
) -> Ui:
    """Start the webserver on host:port and the daemon (schedules, backfills, run
    monitoring), on the instance and workspace the settings name, logging under
    PHLO_HOME/ui."""
    # The daemon and webserver start in this environment: a run in a container of its own
    # (PHLO_RUN_LAUNCHER=docker) gets the settings it holds.
    sync_instance_config(settings, run_env_from_environment=True)
    dagster_home = settings.resolved_dagster_home.absolute()
    workspace = str(workspace_file(settings).absolute())
    logs = settings.home.absolute() / "ui"
    logs.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        **(extra_env or {}),
        "PHLO_HOME": str(settings.home.absolute()),
        "DAGSTER_HOME": str(dagster_home),
        "PHLO_SERVER": "0",  # runs launched here are Dagster's own processes
    }
    commands = {
        "webserver": [_program("dagster-webserver"), "-w", workspace, "-h", host, "-p", str(port)],
        "daemon": [_program("dagster-daemon"), "run", "-w", workspace],
    }
    ui = Ui(f"http://{host}:{port}", logs)
    try:
        for name, command in commands.items():
            with (logs / f"{name}.log").open("ab") as log:
                ui.processes[name] = subprocess.Popen(
                    command,
                    env=env,
                    cwd=settings.home.absolute(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own group: stop() ends everything it starts
                )
    except BaseException:
        ui.stop()
        raise
    return ui
