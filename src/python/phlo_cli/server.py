"""A warm process that runs `phlo materialize` and `phlo backfill` without their start-up cost.

Every such command imports Dagster, dbt, DuckDB and the code locations, builds the locations'
definitions and checks each dbt project's parse: about half of a one-day run. The first command
starts a server in the background (and runs as before); the server does that work once, then
listens on a Unix socket. Later commands connect, hand over their arguments, environment,
folder and standard streams (the file descriptors themselves, so a terminal stays a terminal),
and the server forks a child that runs the command as the `phlo` process would, from where the
imports left off. The client forwards Ctrl-C and other signals to the child's process group and
exits with the child's exit code; if the client is killed, the child kills its process group.

The child's exit status reaches the client through a keeper: a process forked by the server for
each command, whose only work is to be the command's parent, wait for it and write its status on
the client's connection. The server itself closes its copy of the connection once the keeper is
forked, so a server that dies (killed, out of memory) leaves the commands it started running and
their clients told how they really ended. (The alternatives were worse: a command that writes its
own exit code cannot when a signal kills it or when it ends by `os._exit`, and a command killed
with its server would lose work a user did not ask to stop.)

A server serves one key, the code version: the Python and the variables it reads when it starts
(PYTHONPATH, locale, a PEX's), the installed packages, and every file of the code locations, the
dbt projects and phlo itself (modification times and sizes). Settings, the rest of the
environment and the folder are the command's: its child applies them, and its runs' resources
serve them, so one server serves every setting (definitions it built are reused by children on
the same calendar and home). Change the code and the next command starts a new server; the old
one exits after PHLO_SERVER_IDLE_SECONDS without a command. PHLO_SERVER=0 turns it off. A
server whose socket file is removed or replaced stops taking commands within a second (it checks
the file's inode) and exits once its commands end; it gives up its key at once, so the next
command starts a new server.

Nobody else can stand in for a server. Its folder (`$XDG_RUNTIME_DIR/phlo-UID`, or
`/tmp/phlo-UID`) must be this user's own folder, mode 0700, not a symlink (checked with lstat
after a mkdir that does not follow links), in folders that only root or this user can change (or
sticky ones, as /tmp), so no file named after a key is created where another user can write. The
client checks the uid of the process on the other end of the socket (SO_PEERCRED) before it sends
anything; when either is not right it says why in one line and runs the command itself. Linux
only (pidfd); elsewhere commands run directly.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import importlib
import io
import json
import logging
import os
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from phlo_core.private_folder import NotPrivateError, check_private, open_private, private_folder

if TYPE_CHECKING:
    from phlo_core.backfill.workers import WorkerProcess, WorkerStarter
    from phlo_core.settings import PhloSettings

OFF = {"0", "false", "no", "off"}
HEADER = struct.Struct("!I")
_lock_fd: int | None = None  # the server's lock on its key
_lock_path: Path | None = None  # where that lock file is now (renamed when the server stops)
_socket: Path | None = None  # in a server and the commands it runs: its socket
_workspace: Path | None = None  # in a server: the workspace file whose locations it loaded
DEFAULT_IDLE_SECONDS = 600.0
CHECK_SECONDS = 1.0  # how often a server checks that its socket file is still its own
SERVED = ("materialize", "backfill")  # the commands a warm server runs
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def wanted(tokens: Sequence[str]) -> bool:
    """Whether this command line (of a command phlo serves: `SERVED`) goes
    through a server."""
    if os.environ.get("PHLO_SERVER", "1").strip().lower() in OFF:
        return False
    if any(token in ("-h", "--help", "--version") for token in tokens):
        return False
    return hasattr(os, "pidfd_open") and hasattr(socket, "send_fds")


def _peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def _connect(path: Path) -> socket.socket:
    """A connection to the server on `path`, once the kernel says it runs as this user (a socket
    file can be renamed into place; only the peer's credentials tell who listens)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        uid = _peer_uid(sock)
        if uid != os.getuid():
            raise NotPrivateError(f"the server on {path} runs as another user (uid {uid})")
    except BaseException:
        sock.close()
        raise
    return sock


def _idle_seconds() -> float:
    try:
        return float(os.environ.get("PHLO_SERVER_IDLE_SECONDS", DEFAULT_IDLE_SECONDS))
    except ValueError:
        return DEFAULT_IDLE_SECONDS


def server_key() -> str:
    """The code version a server runs, hashed: the Python and what it was started with, the
    installed packages, the workspace file and every file of the code locations, the dbt
    projects and phlo. Not the settings nor the rest of the environment, nor the folder: a
    command brings those, and its child applies them (its runs' resources read them). The
    workspace file is found without loading the settings (`configured_workspace`); the child
    checks that its settings name the one its server loaded (`_other_workspace`)."""
    from phlo_core.runs.asset_index import digest_files, workspace_fingerprint
    from phlo_core.workspace import configured_workspace

    digest = hashlib.sha256()
    digest.update(workspace_fingerprint(configured_workspace()).encode())  # locations, dbt, core
    digest_files(digest, Path(__file__).parent)  # and phlo's CLI
    for entry in sys.path:  # packages installed or upgraded change their folder's time
        if Path(entry).name in ("site-packages", "dist-packages") or entry.endswith(".pex"):
            # not a source folder's: running a command may write there (a sandbox's root on
            # sys.path changed with the first command's files; the code is digested above)
            with contextlib.suppress(OSError):
                digest.update(f"{entry}:{os.stat(entry).st_mtime_ns}".encode())
    started_with = sorted((k, v) for k, v in os.environ.items() if _at_start(k))
    digest.update(json.dumps([sys.executable, started_with]).encode())
    return digest.hexdigest()[:20]


def _at_start(name: str) -> bool:
    """Variables an interpreter reads once, when it starts (its path, encoding, a PEX's own):
    a server started with others would not run a command as that command's `phlo` would."""
    if name in ("PYTHONUNBUFFERED", "PHLO_SERVER"):  # applied per command
        return False
    return name.startswith(("PYTHON", "PEX_", "LC_")) or name == "LANG"


# --- the client ----------------------------------------------------------------------------------


def run_through(tokens: Sequence[str]) -> int | None:
    """Run the command in a warm server: its exit code, or None when there is none to use (one
    is then started for the next command, and the caller runs this one itself)."""
    try:
        key = server_key()
    except Exception:  # the caller's own run reports bad settings properly
        return None
    path = None
    try:
        path = private_folder() / f"{key}.sock"
        sock = _connect(path)
    except NotPrivateError as exc:
        print(f"phlo: warning: not using the phlo server: {exc}; running directly", file=sys.stderr)
        return None
    except OSError:  # no server listens (yet)
        assert path is not None
        if not _failed_lately(path):
            _start_server(path)
        return None
    with sock:
        try:
            return _converse(sock, tokens)
        except (ConnectionError, ValueError):  # the server was stopping: nothing ran
            return None


def _failed_lately(path: Path) -> bool:
    """A server could not serve this key in the last PHLO_SERVER_IDLE_SECONDS (its log says
    why): run directly rather than start one that fails again."""
    try:
        return time.time() - path.with_suffix(".failed").stat().st_mtime < _idle_seconds()
    except OSError:
        return False


def _start_server(path: Path) -> None:
    log = open_private(path.with_suffix(".log"), os.O_WRONLY | os.O_APPEND)
    with open(os.devnull, "rb") as null, open(log, "ab") as out:
        subprocess.Popen(
            # -P: not the current folder first on sys.path (a `json.py` there would run)
            [sys.executable, "-P", "-m", "phlo_cli.server", str(path)],
            stdin=null,
            stdout=out,
            stderr=out,
            start_new_session=True,  # not in the terminal's process group: Ctrl-C is ours
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},  # a PEX's too
            close_fds=True,
        )


def _standard_fds() -> list[int]:
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            fds.append(os.open(os.devnull, os.O_RDWR))
    return fds


def _send(sock: socket.socket, request: dict, fds: list[int]) -> None:  # type: ignore[type-arg]
    umask = os.umask(0o022)
    os.umask(umask)
    data = json.dumps({**request, "cwd": os.getcwd(), "umask": umask}).encode()
    socket.send_fds(sock, [HEADER.pack(len(data)) + data], fds)


def _converse(sock: socket.socket, tokens: Sequence[str]) -> int | None:
    _send(sock, {"argv": list(tokens), "env": dict(os.environ)}, _standard_fds())
    reader = sock.makefile("rb")
    first = reader.readline()
    if not first:
        return None  # the server ended before starting it: the caller runs it itself
    pid = int(json.loads(first)["pid"])

    def forward(signum: int, _frame: object) -> None:
        try:
            os.killpg(pid, signum)  # the child leads its own process group (its workers too)
        except OSError:
            with contextlib.suppress(OSError):
                os.kill(pid, signum)

    before = {signum: signal.signal(signum, forward) for signum in FORWARDED}

    def restore() -> None:  # for this process to run the command itself
        for signum, handler in before.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    try:
        try:
            last = reader.readline()
        except ConnectionError:
            last = b""
        if not last:
            return _status_lost()
        ended = json.loads(last)
    except BaseException:
        restore()
        raise
    if ended.get("redo"):  # the child ran nothing: this process runs the command itself
        restore()
        print(
            f"phlo: warning: not using the phlo server: {ended['redo']}; running directly",
            file=sys.stderr,
        )
        return None
    if ended.get("signal"):  # killed by a signal: so is this process, as a shell reports it
        signum = int(ended["signal"])
        signal.signal(signum, signal.SIG_DFL)
        sys.stdout.flush()
        os.kill(os.getpid(), signum)
    return int(ended["exit"])


class ServedWorker:
    """A backfill worker the server forks (everything loaded) for the backfill it runs, with
    the face of the `subprocess.Popen` a backfill otherwise starts: stdout a pipe of JSON lines,
    `wait`, `kill`, `returncode` (negative: killed by that signal)."""

    def __init__(self, path: Path, args: list[str], env: dict[str, str]) -> None:
        self.returncode: int | None = None
        read_end, write_end = os.pipe()
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            self._sock = _connect(path)
            request = {"argv": args, "env": env, "worker": True, "group": os.getpgid(0)}
            _send(self._sock, request, [null, write_end, 2])
            self._reader = self._sock.makefile("rb")
            first = self._reader.readline()
            if not first:
                raise ConnectionError("the phlo server did not start the worker")
            self.pid = int(json.loads(first)["pid"])
        except BaseException:
            os.close(read_end)
            if hasattr(self, "_sock"):
                self._sock.close()
            raise
        finally:
            os.close(write_end)
            os.close(null)
        self.stdout = open(read_end, encoding="utf-8")  # noqa: SIM115 (the worker's lines)

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is not None:
            return self.returncode
        readable, _, _ = select.select([self._sock], [], [], timeout)
        if not readable:
            raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0)
        line = self._reader.readline()
        ended = json.loads(line) if line else {"exit": 1}
        self.returncode = -int(ended["signal"]) if ended.get("signal") else int(ended["exit"])
        self._sock.close()
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


def worker_starter() -> WorkerStarter | None:
    """In a command the server runs: what starts its backfill's workers in the server (forked
    warm, ~5 s sooner than a new process), or a new process if the server cannot."""
    path = _socket
    if path is None:
        return None
    from phlo_core.backfill.workers import start_worker_process

    def start(args: list[str], env: dict[str, str]) -> WorkerProcess:
        try:
            return ServedWorker(path, args, env)
        except OSError:
            return start_worker_process(args, env)

    return start


def _status_lost() -> int:
    """The keeper that waits for the command ended before the command did (killed, or it could
    not fork): the outcome cannot be known, and the command is stopped with this client (its
    process group is killed when the connection closes)."""
    print(
        "phlo: error: the command's exit status was lost (the phlo server process waiting for "
        "it ended first); the command was stopped",
        file=sys.stderr,
    )
    return 1


# --- `phlo server` -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Running:
    pid: int
    socket: Path
    log: Path
    stopping: bool  # gave up its key (socket gone, or asked to stop): finishing its commands

    @property
    def code_version(self) -> str:
        """The key it serves (a hash of the code, see the module's doc)."""
        return self.socket.stem

    def memory_mb(self) -> float | None:
        """Its resident memory (the server itself, not the commands it runs)."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except (OSError, ValueError, IndexError):
            pass
        return None

    def age_seconds(self) -> float | None:
        """How long ago it started."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
            return float(Path("/proc/uptime").read_text().split()[0]) - started
        except (OSError, ValueError, IndexError):
            return None


def running() -> list[Running]:
    """The servers of this user. Files of servers gone are removed. Lock files are opened to
    read, never created: a server retiring renames its lock away meanwhile."""
    found = []
    for lock_path in sorted(private_folder().glob("*.lock")):
        key, _, _ = lock_path.name.removesuffix(".lock").partition(".stopping-")
        try:
            fd = os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        with os.fdopen(fd) as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held: the server is alive
                text = lock.read().strip()
                if text.isdigit():
                    stopping = ".stopping-" in lock_path.name
                    socket_path = lock_path.with_name(f"{key}.sock")
                    log = lock_path.with_name(f"{key}.log")
                    found.append(Running(int(text), socket_path, log, stopping))
                continue
            names = [lock_path.name] if ".stopping-" in lock_path.name else []
            names += [] if names else [f"{key}.sock", f"{key}.log", f"{key}.lock"]
            for name in names:
                with contextlib.suppress(FileNotFoundError):
                    lock_path.with_name(name).unlink()
    return found


def stop_all() -> int:
    """Ask every server of this user to stop (running commands finish first); how many. Also
    forgets which keys could not be served, so that the next command tries again."""
    for failed in private_folder().glob("*.failed"):
        with contextlib.suppress(FileNotFoundError):
            failed.unlink()
    servers = running()
    for server in servers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.pid, signal.SIGTERM)
    return len(servers)


# --- the server ----------------------------------------------------------------------------------


_FIRST_RUN_MODULES = (
    "dagster._core.instance.factory",
    "dagster._core.storage.root",
    "dagster._core.storage.sqlite",
    "dagster._core.storage.event_log",
    "dagster._core.storage.runs",
    "dagster._core.storage.schedules",
    "dagster._core.storage.local_compute_log_manager",
    "dagster._core.execution.execute_in_process",
    "dagster._core.executor.in_process",
    "dagster._core.workspace.context",
    "dagster._daemon",
    "dagster_postgres",
    "phlo_core.runs.event_storage",
    "dbt.task.build",
    "dbt.adapters.duckdb",
    "dbt.compilation",
    "dbt.runners",
    "pandera.backends.pandas.register",
    "pyarrow.dataset",
    "pyarrow.pandas_compat",
    # a location's report (its asset in a run, `phlo report`): drawn with matplotlib's Agg
    "matplotlib.figure",
    "matplotlib.font_manager",
    "matplotlib.backends.backend_agg",
)


def _preload() -> None:
    """Everything a command imports and checks before its first run starts."""
    handlers = logging.root.handlers[:]
    import dagster  # noqa: F401
    import dbt.cli.main  # noqa: F401
    import duckdb  # noqa: F401

    import phlo_cli.cli  # noqa: F401
    import phlo_core.backfill.workers  # noqa: F401
    import phlo_core.runs.engine  # noqa: F401
    from phlo_core.dbt.project import prepare_project, prepared_projects
    from phlo_core.dbt.runner import parsed_manifest
    from phlo_core.settings import check_home, get_settings
    from phlo_core.workspace import (
        configured_workspace,
        load_definitions,
        location_refs,
        workspace_file,
    )

    # What a process's first run imports beyond the definitions (Dagster's storages and their
    # SQLAlchemy and alembic, the run's execution, dbt's build task): about 2 s a command when
    # each child imported it again. Imported only: the server serves any home and instance.
    for name in _FIRST_RUN_MODULES:
        with contextlib.suppress(ImportError):  # dagster_postgres: only if installed
            importlib.import_module(name)
    global _workspace
    settings = get_settings()
    check_home(settings)
    _workspace = workspace_file(settings)
    keyed = configured_workspace()
    if keyed != _workspace:  # its key would not say what it serves
        raise RuntimeError(
            f"the workspace file found without loading the settings, {keyed}, is not the "
            f"settings' own, {_workspace}"
        )
    for ref in location_refs(settings):
        load_definitions(ref, settings)
    for project_dir in prepared_projects():
        prepare_project(project_dir, settings)  # as a run does before its first dbt command
        parsed_manifest(project_dir, settings)
    _warm_first_run(settings)
    # dbt's telemetry package calls logging.basicConfig() when imported, which a command does
    # not always do: children start with the logging a fresh `phlo` process has.
    logging.root.handlers[:] = handlers


def _warm_first_run(settings: PhloSettings) -> None:
    """What a process's first run does once and then keeps, done here for every child: Dagster
    reads its storages' migration scripts when it first opens an instance (0.4 s of a
    command's start; 0.1 s once read), matplotlib loads its fonts when it first draws. The
    instance is opened only if it exists (starting a server creates none) and is on SQLite:
    nothing stays open across the fork (its connections are closed here)."""
    from matplotlib.figure import Figure

    from phlo_core.runs.instance import instance_for

    home = settings.resolved_dagster_home
    if settings.dagster_postgres_url is None and (home / "dagster.yaml").is_file():
        with contextlib.suppress(Exception):  # the command will report what is wrong
            instance_for(settings).dispose()
    figure = Figure(figsize=(2, 1))
    figure.add_subplot().set_title("phlo")
    figure.savefig(io.BytesIO(), format="png")


def serve(path: Path) -> int:
    """Preload, then serve commands on `path` until idle for PHLO_SERVER_IDLE_SECONDS, or until
    its socket file is removed or replaced."""
    global _lock_fd, _lock_path, _socket
    try:
        check_private(path.parent)  # the client checked it; so does what creates files there
        lock = open_private(path.with_suffix(".lock"), os.O_RDWR)
    except OSError as exc:
        print(f"not serving: {exc}")
        return 1
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock)
        return 0  # another server has this key (its pid stays in the file)
    _lock_fd = lock  # held for the server's life; children close it
    _lock_path = path.with_suffix(".lock")
    _socket = path
    os.ftruncate(lock, 0)
    os.write(lock, f"{os.getpid()}\n".encode())
    started = time.perf_counter()
    try:
        _preload()
    except BaseException as exc:  # noqa: BLE001 (reported, and the commands run directly)
        from phlo_core.redact import redact

        reason = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return _refuse(path, f"preload failed: {reason}")
    # Python threads would not survive the fork (a lock one held stays held in the child).
    # Native pools of the libraries loaded (OpenBLAS's, jemalloc's) prepare for fork themselves;
    # one that does not (dbt's static parser's rayon pool) is kept from starting at all.
    if threading.active_count() > 1:
        names = ", ".join(thread.name for thread in threading.enumerate())
        return _refuse(path, f"threads running after preload ({names}): forking is unsafe")
    # What the preload made lives as long as the server: out of the garbage collector's sight
    # (as Python's documentation advises before forking without exec). Otherwise a command's
    # first full collection walked its ~500,000 objects (0.4 s of a day's run) and, by writing
    # to each one's header, made a private copy of pages it shared (a day's command: 233 MB of
    # private memory, 162 MB frozen).
    gc.collect()
    gc.freeze()
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        scratch.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(scratch))
    listener.listen(16)
    os.replace(scratch, path)  # clients see the socket only once the server is warm
    ours = path.stat().st_ino
    print(f"serving {path.name} (pid {os.getpid()}; warm in {time.perf_counter() - started:.1f}s)")
    sys.stdout.flush()
    try:
        _loop(listener, path, ours)
    finally:
        _unlink_if_ours(path, ours)
        listener.close()
        if _lock_path != path.with_suffix(".lock"):  # retired: nobody else will clean it up
            with contextlib.suppress(OSError):
                _lock_path.unlink()
    return 0


def _refuse(path: Path, reason: str) -> int:
    """Not serving this key: said in its log and in `<key>.failed`, which tells clients to run
    directly rather than start a server that fails again (a change of code or settings is a
    new key)."""
    print(f"not serving: {reason}")
    failed = open_private(path.with_suffix(".failed"), os.O_WRONLY | os.O_TRUNC)
    with open(failed, "w") as out:
        out.write(reason + "\n")
    return 1


def _unlink_if_ours(path: Path, inode: int) -> None:
    """Remove the socket file unless a newer server has put its own there."""
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_ino == inode:
            path.unlink()


def _still_ours(path: Path, inode: int) -> bool:
    """Whether clients still reach this server: its socket file is the one it bound."""
    try:
        return os.lstat(path).st_ino == inode
    except FileNotFoundError:
        return False


def _retire(path: Path, ours: int) -> None:
    """Take no more commands, and give up the key at once: the socket file goes (clients run
    directly, or start a new server) and the lock file is renamed (still held, so `phlo server
    status` shows this server stopping), so that a new server can take the key while this one
    finishes the commands it runs."""
    global _lock_path
    _unlink_if_ours(path, ours)
    if _lock_fd is None or _lock_path is None:
        return
    retired = path.with_name(f"{path.stem}.stopping-{os.getpid()}.lock")
    with contextlib.suppress(OSError):
        if os.lstat(_lock_path).st_ino == os.fstat(_lock_fd).st_ino:
            os.rename(_lock_path, retired)
            _lock_path = retired


def _loop(listener: socket.socket, path: Path, ours: int) -> None:
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    wake_read, wake_write = socket.socketpair()
    wake_read.setblocking(False)
    wake_write.setblocking(False)
    signal.set_wakeup_fd(wake_write.fileno())  # a signal makes select() return
    selector.register(wake_read, selectors.EVENT_READ, "signal")
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    children: dict[int, int] = {}  # pidfd -> pid of the keeper of a running command
    idle = _idle_seconds()
    active = time.monotonic()  # when a command last started or ended
    while not (stopping and not children):
        if not stopping and not _still_ours(path, ours):
            print(f"socket {path.name} removed or replaced: stopping")
            sys.stdout.flush()
            stopping = True
        if stopping and listener.fileno() != -1:
            _retire(path, ours)  # no new commands (clients then run directly) ...
            selector.unregister(listener)
            listener.close()  # ... and the running ones finish
            if not children:
                break
        timeout = CHECK_SECONDS
        if not children and not stopping:
            timeout = min(timeout, idle - (time.monotonic() - active))
            if timeout <= 0:
                break  # idle
        for key, _ in selector.select(timeout):
            if key.data == "signal":
                with contextlib.suppress(OSError):
                    wake_read.recv(64)
            elif key.data == "accept":
                active = time.monotonic()
                child = _accept(listener, selector, [wake_read, wake_write])
                if child is not None:
                    pidfd, keeper = child
                    children[pidfd] = keeper
                    selector.register(pidfd, selectors.EVENT_READ, keeper)
            else:
                active = time.monotonic()
                pidfd = key.fd
                selector.unregister(pidfd)
                keeper = children.pop(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(keeper, 0)  # its command's end is in the log already
                if status and os.WIFSIGNALED(status):
                    print(f"keeper {keeper} killed by signal {os.WTERMSIG(status)}", flush=True)


def _accept(
    listener: socket.socket,
    selector: selectors.BaseSelector,
    inherited: list[socket.socket],
) -> tuple[int, int] | None:
    """Take a command: check the peer is this user, read its request and standard streams, and
    fork the keeper that runs it (`inherited`: the server's sockets, closed in the keeper).
    Returns the keeper's pidfd and pid."""
    conn, _ = listener.accept()
    fds: list[int] = []
    try:
        if _peer_uid(conn) != os.getuid():
            conn.close()
            return None
        conn.settimeout(10)
        data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        (size,) = HEADER.unpack_from(data)
        while len(data) < HEADER.size + size:
            more = conn.recv(1 << 16)
            if not more:
                raise OSError("client went away")
            data += more
        request = json.loads(data[HEADER.size : HEADER.size + size])
        if len(fds) != 3:
            raise OSError("expected three file descriptors")
        conn.settimeout(None)
    except (OSError, ValueError, struct.error) as exc:
        print(f"bad request: {exc}")
        for fd in fds:
            os.close(fd)
        conn.close()
        return None
    keeper = os.fork()
    if keeper == 0:
        signal.set_wakeup_fd(-1)
        if _lock_fd is not None:
            os.close(_lock_fd)
        for own in (listener, *inherited):
            own.close()
        for key in list(selector.get_map().values()):
            if isinstance(key.data, int):  # another keeper's pidfd
                os.close(key.fd)
        selector.close()
        _keep(conn, fds, request)  # never returns
    for fd in fds:
        os.close(fd)
    conn.close()  # the keeper holds it: what the client hears no longer depends on the server
    return os.pidfd_open(keeper), keeper


def _keep(conn: socket.socket, fds: list[int], request: dict) -> NoReturn:  # type: ignore[type-arg]
    """In the keeper: fork the command, tell the client its pid, wait for it and write how it
    ended on the client's connection, then exit with that code (128 + the signal's number for a
    command a signal killed, as shells say). The server's log gets both lines first, so it
    tells what ran even when the server is gone. Signals the client forwards go to the
    command's process group, not here: the keeper ignores them and outlives the server."""
    code = 1
    try:
        for signum in FORWARDED:
            signal.signal(signum, signal.SIG_IGN)
        pid = os.fork()
        if pid == 0:
            for signum in FORWARDED:
                signal.signal(signum, signal.SIG_DFL)
            _child(conn, fds, request)  # never returns
        for fd in fds:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.setpgid(pid, _group_of(request, pid))  # also done by the child: whichever is first
        what = "backfill worker" if request.get("worker") else "phlo"
        print(f"pid {pid}: {what} {' '.join(request['argv'][:1])}", flush=True)
        try:
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        except OSError:  # the client is gone: so is its command
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        ended = {"exit": 128 - code, "signal": -code} if code < 0 else {"exit": code}
        code = ended["exit"]
        print(f"pid {pid} exited {code}", flush=True)
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps(ended).encode() + b"\n")
    finally:
        os._exit(code)


def _group_of(request: dict, pid: int) -> int:  # type: ignore[type-arg]
    """A command leads a process group of its own; a backfill's worker joins the backfill's
    (Ctrl-C, forwarded to the group, reaches it as it reached workers in the terminal's)."""
    group = request.get("group")
    return int(group) if request.get("worker") and group else pid


def _child(conn: socket.socket, fds: list[int], request: dict) -> None:  # type: ignore[type-arg]
    """In the command, the keeper's child: become the caller's `phlo` process and run its
    command (or, for a served backfill, one of its workers)."""
    code = 1
    try:
        os.setpgid(0, _group_of(request, os.getpid()))
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        # As Python sets them up for the caller: line-buffered on a terminal or when
        # PYTHONUNBUFFERED is set (then also written through), the same encoding and errors.
        encoding = sys.__stdout__.encoding if sys.__stdout__ else "utf-8"
        errors = sys.__stdout__.errors if sys.__stdout__ else "strict"
        unbuffered = bool(request["env"].get("PYTHONUNBUFFERED"))
        sys.stdin = open(0, encoding=encoding, errors=errors, closefd=False)  # noqa: SIM115
        sys.stdout = open(  # noqa: SIM115
            1,
            "w",
            buffering=1 if os.isatty(1) or unbuffered else -1,
            encoding=encoding,
            errors=errors,
            closefd=False,
        )
        sys.stderr = open(  # noqa: SIM115
            2, "w", buffering=1, encoding=encoding, errors="backslashreplace", closefd=False
        )
        os.chdir(request["cwd"])
        os.umask(int(request["umask"]))
        os.environ.clear()
        os.environ.update(request["env"])
        time.tzset()  # the command's TZ, if it has one
        from phlo_core.settings import use_settings

        use_settings(None)  # read again from the caller's environment
        if not request.get("worker") and (other := _other_workspace()):
            conn.sendall(json.dumps({"redo": other}).encode() + b"\n")
            code = 0
            return
        threading.Thread(target=_die_with_client, args=(conn,), daemon=True).start()
        if request.get("worker"):
            from phlo_core.backfill.workers import worker_main

            sys.argv = ["phlo_core.backfill.workers", *request["argv"]]
            code = worker_main(list(request["argv"]))
            return
        from phlo_cli.cli import run

        sys.argv = ["phlo", *request["argv"]]
        run(list(request["argv"]))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 (main reports its own errors; this is a last resort)
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _other_workspace() -> str | None:
    """In a command's child: why its server is not the one for it, when its settings name
    another workspace file than the server loaded (its client found the server by the file it
    read from the same sources: `configured_workspace`). None when they agree, or when the
    settings do not load (the command then says why)."""
    from phlo_core.settings import get_settings
    from phlo_core.workspace import workspace_file

    try:
        wanted = workspace_file(get_settings())
    except Exception:  # noqa: BLE001 (the command reports it)
        return None
    if _workspace is None or wanted == _workspace:
        return None
    return f"its settings name workspace {wanted}, the server's is {_workspace}"


def _die_with_client(conn: socket.socket) -> None:
    """The client sends nothing after its request: end of file means it is gone (killed), and
    so is this command, with its process group (backfill workers), as a killed `phlo` would."""
    try:
        while conn.recv(1024):
            pass
    except OSError:
        pass
    os.killpg(0, signal.SIGKILL)


if __name__ == "__main__":
    # Through the module by its name: the commands it runs import `phlo_cli.server` and must
    # find this server's state there, not in a second copy of the module.
    from phlo_cli import server
    from phlo_core.process_exit import exit_now

    exit_now(server.serve(Path(sys.argv[1])))  # cleaned up: no interpreter teardown (seconds)
