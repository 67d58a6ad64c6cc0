"""Environments of their own for tools whose pins exclude the locations' (Superset's SQLAlchemy
1.4, DataHub's framework): a venv per tool, version and pins in the user's cache
(~/.cache/phlo/<name>-<version>-<digest of the pins>), made once per machine and user with uv
(or pip where there is no uv), the installer's lines shown as progress, shared by every
PHLO_HOME of that user. A venv is used only once complete (a READY file written last): one
killed midway is made again."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from phlo_core.lakehouse.locks import file_lock

Progress = Callable[[str], None]


class ToolEnvironmentError(Exception):
    """The tool's environment could not be made (the installer's last line says why)."""


def quiet(message: str) -> None:
    del message


@dataclass(frozen=True)
class ToolEnvironment:
    name: str  # e.g. "superset": the venv's folder name starts with it
    title: str  # for progress lines: "Superset 6.1.0"
    version: str
    requirements: Sequence[str]

    @property
    def directory(self) -> Path:
        """The venv for these requirements, in the user's cache."""
        digest = hashlib.sha256("\n".join(self.requirements).encode()).hexdigest()[:12]
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return cache / "phlo" / f"{self.name}-{self.version}-{digest}"

    @property
    def python(self) -> Path:
        return self.directory / "bin" / "python"

    def ensure(self, progress: Progress = quiet) -> Path:
        """The venv, installed first if it is not complete (one installer at a time)."""
        root = self.directory
        ready = root / "READY"
        if ready.exists():
            return root
        root.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(root.parent / f".{root.name}.lock"):
            if ready.exists():  # another process installed it meanwhile
                return root
            shutil.rmtree(root, ignore_errors=True)  # a half-made one: start over
            env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_"))}
            env["UV_PYTHON_DOWNLOADS"] = "never"
            started = time.monotonic()
            progress(f"installing {self.title} into {root} (once)")
            uv = _installer()
            python = str(self.python)
            what = f"installing {self.title}"
            if uv:
                made = [*uv, "venv", "--python", _base_python(), str(root)]
                install = [*uv, "pip", "install", "--python", python, *self.requirements]
            else:
                made = [_base_python(), "-m", "venv", str(root)]
                install = [python, "-m", "pip", "install", "--progress-bar", "off"]
                install += self.requirements
            _stream(made, "making its venv", progress, env)
            _stream(install, what, progress, env)
            ready.write_text(f"{self.version}\n")
            progress(f"{self.title} installed in {time.monotonic() - started:.0f}s")
        return root


def _base_python() -> str:
    """A Python 3.11 outside any venv (this process's may be phlo's venv)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def _installer() -> list[str] | None:
    """uv, when there is one: the `uv` program, or the module in the base Python."""
    found = shutil.which("uv")
    if found:
        return [found]
    probe = subprocess.run(
        [_base_python(), "-m", "uv", "--version"], capture_output=True, check=False
    )
    return [_base_python(), "-m", "uv"] if probe.returncode == 0 else None


def _stream(command: list[str], what: str, progress: Progress, env: dict[str, str]) -> None:
    """Run `command`, each line of its output given to `progress`; fail with its last line."""
    last = ""
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip():
                last = line.strip()
                progress(last)
    if process.returncode != 0:
        raise ToolEnvironmentError(f"{what} failed: {last or process.returncode}")
