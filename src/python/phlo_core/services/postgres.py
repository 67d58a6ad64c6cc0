"""The PostgreSQL of `phlo services`: Debian's binaries run on a loopback port, password
(scram-sha-256) on every connection, its socket folder private; as root it runs as the
`postgres` user from a folder phlo creates for it. Databases and a role per profile."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from phlo_core.services.layout import (
    PG_BIN_CANDIDATES,
    ROLE,
    Layout,
    ServiceError,
    own_folder,
    process_alive,
    profile_names,
    run_tool,
    write_private_file,
)

PG_HBA = """\
# Written by phlo at every start of PostgreSQL: every connection needs the password.
local   all   all                  scram-sha-256
host    all   all   127.0.0.1/32   scram-sha-256
host    all   all   ::1/128        scram-sha-256
"""


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


def _hand_to_postgres_user(*paths: Path, recursive: bool = False) -> None:
    """As root, what phlo wrote for PostgreSQL belongs to the `postgres` user it runs as."""
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam("postgres")
    for path in paths:
        for item in [path, *(path.rglob("*") if recursive else ())]:
            os.chown(item, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def _pg_pid(where: Layout) -> int | None:
    pid_file = where.pg_data / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if process_alive(pid, "postgres") else None


def pg_running(where: Layout) -> bool:
    return _pg_pid(where) is not None


def postgres_home_folder(root: Path) -> Path:
    """As root: a new folder for PostgreSQL's files in the `postgres` user's home.

    PostgreSQL refuses to run as root, and the `postgres` user it runs as instead must reach
    its data folder through every folder above it. PHLO_HOME under /root (0700) is out of its
    reach, and loosening /root (or any folder phlo did not create) is not phlo's to do: the
    files live where that user can already go, in a folder phlo creates and owns for it.
    PHLO_HOME/services/state.json records where (`phlo services status` shows it). Files an
    older phlo kept under PHLO_HOME/services/postgres move there.
    """
    entry = pwd.getpwnam("postgres")
    home = Path(entry.pw_dir)
    reach = ["runuser", "-u", "postgres", "--", "test", "-d", str(home), "-a", "-w", str(home)]
    if subprocess.run(reach, capture_output=True, timeout=30, check=False).returncode != 0:
        raise ServiceError(
            f"PostgreSQL runs as the `postgres` user, whose home {home} is not a folder it can "
            "write, and phlo keeps its files there when run as root: give that user a home "
            "(usermod -d /var/lib/postgresql -m postgres) or run phlo as a normal user"
        )
    folders = home / "phlo"
    own_folder(folders)
    _hand_to_postgres_user(folders)
    folder = folders / secrets.token_hex(6)
    older = root / "postgres"
    if (older / "data" / "PG_VERSION").exists():
        try:
            shutil.move(older, folder)
        except OSError as exc:
            raise ServiceError(
                f"could not move PostgreSQL's files from {older} to {folder}: {exc.strerror}"
            ) from None
        _hand_to_postgres_user(folder, recursive=True)
    else:
        own_folder(folder)
        _hand_to_postgres_user(folder)
    # Whose folder this is, for whoever finds it in the postgres user's home.
    write_private_file(folder / "PHLO_HOME", f"{root.parent}\n")
    return folder


def pg_start(where: Layout, port: int, password: str) -> None:
    binaries = pg_bin()
    runner = _as_postgres_user()
    own_folder(where.pg_root)
    own_folder(where.pg_socket)
    _hand_to_postgres_user(where.pg_root, where.pg_socket)
    if not (where.pg_data / "PG_VERSION").exists():
        own_folder(where.pg_data)
        pwfile = where.pg_root / "pwfile"
        write_private_file(pwfile, password + "\n")
        _hand_to_postgres_user(where.pg_data, pwfile)
        try:
            run_tool(
                [
                    *runner,
                    str(binaries / "initdb"),
                    "-D",
                    str(where.pg_data),
                    "-U",
                    "postgres",
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
                "initdb",
            )
        finally:
            pwfile.unlink(missing_ok=True)
    # Written at every start: data folders an older phlo made trusted local connections.
    write_private_file(where.pg_data / "pg_hba.conf", PG_HBA)
    _hand_to_postgres_user(where.pg_data / "pg_hba.conf")
    options = (
        f"-p {port} -k {where.pg_socket} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c max_connections=200 -c unix_socket_permissions=0700 "
        "-c password_encryption=scram-sha-256"
    )
    logged = where.pg_log.stat().st_size if where.pg_log.exists() else 0
    try:
        run_tool(
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
        fatal = []
        with suppress(OSError), where.pg_log.open(errors="replace") as log:
            log.seek(logged)
            fatal = [line for line in log.read().splitlines() if "FATAL:" in line]
        if not fatal:
            raise
        reason = fatal[-1].split("FATAL:", 1)[1].strip()
        raise ServiceError(
            f"PostgreSQL did not start on 127.0.0.1:{port}: {reason} ({where.pg_log})"
        ) from None


def pg_stop(where: Layout) -> None:
    """A fast shutdown (what `pg_ctl stop -m fast` sends), by signal: it needs no path into
    the data folder, which PostgreSQL's user may no longer reach (files an older phlo kept
    under a PHLO_HOME that is private again)."""
    pid = _pg_pid(where)
    if pid is None:
        return
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + 60
    while _pg_pid(where) is not None:
        if time.monotonic() > deadline:
            raise ServiceError(f"PostgreSQL (pid {pid}) did not stop within 60 s ({where.pg_log})")
        time.sleep(0.1)


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


def pg_provision(port: int, password: str, role_password: str, profiles: list[str]) -> None:
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
