"""Where phlo's local servers keep their files (PHLO_HOME/services), their state file, the
credentials generated at the first `up`, and the helpers every server shares: free ports,
private files, processes run and checked."""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phlo_core.lakehouse.locks import write_atomically
from phlo_core.settings import PhloSettings

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


# A Unix socket's path must fit in sun_path (108 bytes with its final NUL).
SOCKET_PATH_MAX = 107


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


WEED_PORTS = (
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


def layout_at(root: Path, state: dict[str, Any]) -> Layout:
    kept = state.get("pg_root")
    return Layout(root, Path(kept) if kept else root / "postgres")


def layout(settings: PhloSettings) -> Layout:
    root = settings.home / "services"
    return layout_at(root, read_state(root))


# Ports phlo chooses for its servers start here: below, the usual ports of other software.
FIRST_CHOSEN_PORT = 20000
_chosen: set[int] = set()  # ports free_port gave in this process: a start takes several at once
_random = random.SystemRandom()


def ephemeral_ports() -> range:
    """The ports the kernel gives outgoing connections (Linux: ip_local_port_range)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default


def free_port() -> int:
    """A port no socket holds, outside the kernel's ephemeral range. A port the kernel picked
    (bind to port 0) is one it also gives outgoing connections: any client, SeaweedFS's own
    services talking to each other among them, could take it between the choice and the
    server's bind, or on a later `up` that reuses the port. Never one it gave before in this
    process (a start chooses several before it binds any)."""
    ephemeral = ephemeral_ports()
    pools = [
        pool
        for pool in (
            range(FIRST_CHOSEN_PORT, max(FIRST_CHOSEN_PORT, ephemeral.start)),
            range(max(FIRST_CHOSEN_PORT, ephemeral.stop), 65536),
        )
        if pool
    ]
    for _ in range(200 if pools else 0):
        pool = _random.choices(pools, weights=[len(pool) for pool in pools])[0]
        port = _random.choice(pool)
        if port not in _chosen and not port_in_use(port):
            _chosen.add(port)
            return port
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))  # no port outside the range free: the kernel's choice
        return int(probe.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Whether a server listens on the port. Connections closed a moment ago (TIME_WAIT, say
    after a browser's) do not count: the servers bind with SO_REUSEADDR, and so does this."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def answers_tcp(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def own_folder(path: Path) -> None:
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


def write_private_file(path: Path, text: str) -> None:
    """Replace `path` whole with a file only its owner can read, from its first byte, never
    through a symlink planted in its folder (some are the postgres user's, written as root)."""
    write_atomically(path, text, mode=0o600)


def run_tool(
    command: list[str],
    what: str,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            umask=0o077,
            env=env,
            cwd=cwd,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"{what} failed: {exc}") from None
    if done.returncode != 0:
        reason = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise ServiceError(f"{what} failed: {reason[-1] if reason else done.returncode}")
    return done.stdout


def read_state(root: Path) -> dict[str, Any]:
    state_file = root / "state.json"
    if state_file.exists():
        return json.loads(state_file.read_text())
    return {}


def write_state(where: Layout, state: dict[str, Any]) -> None:
    write_private_file(where.state_file, json.dumps(state, indent=2))


# SeaweedFS's signing keys (security.toml): master-issued tokens for volume writes and reads,
# S3-issued tokens for filer writes and reads.
_WEED_KEYS = ("weed_volume_write", "weed_volume_read", "weed_filer_write", "weed_filer_read")


def credentials(state: dict[str, Any]) -> dict[str, str]:
    """Generated once and kept: passwords and keys for the local servers only."""
    creds = state.setdefault("credentials", {})
    creds.setdefault("pg_password", secrets.token_urlsafe(18))
    creds.setdefault("s3_access_key", "phlo" + secrets.token_hex(6))
    creds.setdefault("s3_secret_key", secrets.token_urlsafe(30))
    for name in _WEED_KEYS:
        creds.setdefault(name, secrets.token_urlsafe(32))
    return creds


def is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


def stop_group(pid: int, stopped: Callable[[], bool], grace: float = 20) -> None:
    """End the process group `pid` leads (a server started in a session of its own): SIGTERM,
    then SIGKILL if `stopped()` is still false after `grace` seconds."""
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if stopped():
            return
        time.sleep(0.2)
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def process_alive(pid: int, program: str) -> bool:
    """`pid` runs `program`: a pid file left by a server that died may name a process that
    reuses its number, which must never be signalled. A server that sets its own title
    ("redis-server 127.0.0.1:PORT", one argument) counts by its first word."""
    try:
        command = os.fsdecode(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0])
    except OSError:
        return False
    names = {Path(command).name, Path(command.split(" ", 1)[0]).name}
    return program in names and not is_zombie(pid)
