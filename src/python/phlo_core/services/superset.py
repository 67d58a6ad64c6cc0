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

import os
import subprocess
import time
from pathlib import Path

from phlo_core.services.layout import (
    Layout,
    ServiceError,
    is_zombie,
    own_folder,
    run_tool,
    stop_group,
    write_private_file,
)
from phlo_core.tool_env import Progress, ToolEnvironment, ToolEnvironmentError, quiet

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


ENVIRONMENT = ToolEnvironment("superset", f"Superset {VERSION}", VERSION, REQUIREMENTS)


def environment_dir() -> Path:
    """Superset's venv, in the user's cache."""
    return ENVIRONMENT.directory


def ensure_environment(progress: Progress = quiet) -> Path:
    """Superset's venv, installed first if it is not complete."""
    try:
        return ENVIRONMENT.ensure(progress)
    except ToolEnvironmentError as exc:
        raise ServiceError(str(exc)) from None


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
    where: Layout, port: int, creds: dict[str, str], progress: Progress = quiet
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
