"""Apache Superset beside the local servers (`phlo services up --with superset`): dashboards on
the published marts.

Superset cannot share the locations' environment (it pins SQLAlchemy 1.4, pandas 2.1 and
numpy < 2.3, which Dagster's and dbt's pins exclude), so phlo creates one for it: a venv in the
user's cache (~/.cache/phlo/superset-<version>-<digest of the pins>), made once per machine
and user (about 2.5 minutes on two cores, progress shown), shared by every PHLO_HOME of that
user. What Superset 6.1.0 misses in its own requirements is pinned beside it: `rich` and
`cachetools`, and flask-caching 2.3.1 (2.5 breaks its start-up).

An instance lives in PHLO_HOME/services/superset (0700): superset_config.py (its secret key),
its metadata database (SQLite; no Redis, no Celery: caches are off), its log and pid file. It
listens on loopback only; every page and API wants a login, and its one user, `admin`, has a
generated password kept in the services' state file (0600, never printed). It runs as gunicorn
in a session of its own, stopped by `phlo services down`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from phlo_core.lakehouse.locks import file_lock
from phlo_core.services.layout import (
    Layout,
    ServiceError,
    is_zombie,
    own_folder,
    run_tool,
    stop_group,
    write_private_file,
)

VERSION = "6.1.0"
REQUIREMENTS = (
    f"apache-superset=={VERSION}",
    "rich>=13,<15",
    "cachetools>=5,<7",
    "flask-caching==2.3.1",
    "psycopg2-binary>=2.9,<3",
)
ADMIN = "admin"
START_SECONDS = 240
Progress = Callable[[str], None]


def _quiet(message: str) -> None:
    del message


def environment_dir() -> Path:
    """The venv for these requirements, in the user's cache."""
    digest = hashlib.sha256("\n".join(REQUIREMENTS).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "phlo" / f"superset-{VERSION}-{digest}"


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
        raise ServiceError(f"{what} failed: {last or process.returncode}")


def ensure_environment(progress: Progress = _quiet) -> Path:
    """Superset's venv, installed first if it is not complete (one installer at a time)."""
    root = environment_dir()
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
        progress(f"installing Superset {VERSION} into {root} (once; a few minutes)")
        uv = _installer()
        python = str(root / "bin" / "python")
        if uv:
            _stream([*uv, "venv", "--python", _base_python(), str(root)], "uv venv", progress, env)
            _stream(
                [*uv, "pip", "install", "--python", python, *REQUIREMENTS],
                "installing Superset",
                progress,
                env,
            )
        else:
            _stream([_base_python(), "-m", "venv", str(root)], "python -m venv", progress, env)
            _stream(
                [python, "-m", "pip", "install", "--progress-bar", "off", *REQUIREMENTS],
                "installing Superset",
                progress,
                env,
            )
        ready.write_text(f"{VERSION}\n")
        progress(f"Superset installed in {time.monotonic() - started:.0f}s")
    return root


def instance_dir(where: Layout) -> Path:
    return where.root / "superset"


def _pid_file(where: Layout) -> Path:
    return instance_dir(where) / "gunicorn.pid"


def _log_file(where: Layout) -> Path:
    return instance_dir(where) / "superset.log"


def _config(where: Layout, secret_key: str) -> str:
    database = instance_dir(where) / "superset.db"
    return (
        "# Written by `phlo services up --with superset`; holds a secret: owner only.\n"
        f"SECRET_KEY = {secret_key!r}\n"
        f"SQLALCHEMY_DATABASE_URI = {f'sqlite:///{database}'!r}\n"
        "CACHE_CONFIG = {'CACHE_TYPE': 'NullCache'}\n"
        "DATA_CACHE_CONFIG = {'CACHE_TYPE': 'NullCache'}\n"
        "FILTER_STATE_CACHE_CONFIG = {'CACHE_TYPE': 'NullCache'}\n"
        "EXPLORE_FORM_DATA_CACHE_CONFIG = {'CACHE_TYPE': 'NullCache'}\n"
        "RATELIMIT_STORAGE_URI = 'memory://'\n"
        "TALISMAN_ENABLED = False\n"
        "WTF_CSRF_ENABLED = True\n"
        "SQLLAB_CTAS_NO_LIMIT = True\n"
        "PREVENT_UNSAFE_DB_CONNECTIONS = True\n"
        "FEATURE_FLAGS = {'DASHBOARD_RBAC': False}\n"
        "SUPERSET_WEBSERVER_TIMEOUT = 120\n"
    )


def _environment(where: Layout, root: Path) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env["SUPERSET_CONFIG_PATH"] = str(instance_dir(where) / "superset_config.py")
    env["SUPERSET_HOME"] = str(instance_dir(where) / "home")
    env["FLASK_APP"] = "superset"
    env["PYTHONPATH"] = ""
    return env


def superset_running(where: Layout) -> int | None:
    """The pid of this instance's gunicorn, if it runs."""
    try:
        pid = int(_pid_file(where).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if b"gunicorn" not in command or is_zombie(pid):
        return None
    return pid


def superset_answers(port: int) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def superset_start(
    where: Layout, port: int, creds: dict[str, str], progress: Progress = _quiet
) -> bool:
    """Install (once), initialize (once per instance) and start Superset on 127.0.0.1:port;
    whether its metadata database was new (nothing imported into it yet)."""
    root = ensure_environment(progress)
    folder = instance_dir(where)
    own_folder(folder)
    own_folder(folder / "home")
    write_private_file(folder / "superset_config.py", _config(where, creds["superset_secret_key"]))
    env = _environment(where, root)
    superset = str(root / "bin" / "superset")
    initialized = folder / "INITIALIZED"
    done = initialized.read_text().strip() if initialized.exists() else ""
    fresh = not done
    if done != VERSION:
        progress("preparing Superset's metadata database (once; about a minute)")
        for args, what in (
            (["db", "upgrade"], "superset db upgrade"),
            (
                ["fab", "create-admin", "--username", ADMIN, "--firstname", "phlo"]
                + ["--lastname", "admin", "--email", "admin@localhost"]
                + ["--password", creds["superset_admin_password"]],
                "superset fab create-admin",
            ),
            (["init"], "superset init"),
        ):
            run_tool([superset, *args], what, timeout=600, env=env, cwd=folder)
        write_private_file(initialized, f"{VERSION}\n")
    progress(f"starting Superset on 127.0.0.1:{port}")
    with _log_file(where).open("ab") as log:
        process = subprocess.Popen(
            [str(root / "bin" / "gunicorn"), "--workers", "2", "--threads", "4"]
            + ["--bind", f"127.0.0.1:{port}", "--timeout", "120", "--pid", str(_pid_file(where))]
            + ["superset.app:create_app()"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=folder,
            env=env,
            umask=0o077,
        )
    _pid_file(where).write_text(f"{process.pid}\n")  # gunicorn rewrites it with the same pid
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = _log_file(where).read_text(errors="replace").strip().splitlines()[-1:]
            reason = tail[0] if tail else process.returncode
            raise ServiceError(f"Superset exited at start: {reason}")
        if superset_answers(port):
            return fresh
        time.sleep(0.5)
    raise ServiceError(
        f"Superset did not answer on 127.0.0.1:{port} within {START_SECONDS} s ({_log_file(where)})"
    )


def superset_stop(where: Layout) -> None:
    pid = superset_running(where)
    if pid is None:
        return
    stop_group(pid, lambda: superset_running(where) is None)
    _pid_file(where).unlink(missing_ok=True)
