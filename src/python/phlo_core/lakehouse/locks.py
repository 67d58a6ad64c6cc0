"""Cross-process locks for what must not run twice at once on one home or one lakehouse.

Many processes may work on one home at a time (`phlo materialize` in several terminals, backfill
workers, runs launched from the UI). What they share and cannot share freely:
- some of the lakehouse's writers: two dbt builds of tables rebuilt whole trip over each
  other's `<model>__dbt_tmp` and `__dbt_backup` relations (names every process shares), and
  maintenance rewrites files under everyone. Those, and phlo's own partition writes (short),
  are serialized per catalog (`lakehouse_writer`). dbt's daily (incremental) builds are not:
  backfill workers build their days at once, and a commit that meets another process's (`database
  is locked` on SQLite, a DuckLake transaction conflict) is built again
  (`dbt_assets.build_retrying_conflicts`). Reads never wait.
- first-time set-up: creating Dagster's SQLite storage (two processes stamping its schema at
  once corrupted the instance for good) and preparing a dbt project (profile, manifest).

These are `flock` locks on files (the kernel releases them when a process dies, even by SIGKILL,
so a killed process never leaves a lock behind), and for a catalog on PostgreSQL, which writers on
several machines share, advisory locks in the catalog's database (PostgreSQL releases them when the
holder's session ends, its process killed or its machine gone).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from phlo_core.settings import PhloSettings

_held: dict[object, int] = {}
_held_guard = threading.Lock()


@contextmanager
def _reentrant(
    key: object, acquire: Callable[[], AbstractContextManager[object]]
) -> Iterator[None]:
    """Hold what `acquire()` takes for the block, once per process: a nested block for a key
    this process holds just goes on (a second flock, or a second session's lock, would wait for
    the first forever)."""
    with _held_guard:
        nested = key in _held
        if nested:
            _held[key] += 1
    if nested:
        try:
            yield
        finally:
            with _held_guard:
                _held[key] -= 1
        return
    with acquire():
        with _held_guard:
            _held[key] = 1
        try:
            yield
        finally:
            with _held_guard:
                del _held[key]


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the block, waiting for it.
    Reentrant within a process."""
    path = path.resolve()
    with _reentrant(path, lambda: _flocked(path)):
        yield


@contextmanager
def _flocked(path: Path) -> Iterator[None]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES):
            raise
        # A folder this process may not write (a read-only home): it can only read here, and
        # still waits for writers that hold the lock; with no lock file nobody ever wrote.
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            yield
            return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def lakehouse_writer_lock_path(settings: PhloSettings) -> Path:
    """The writers' lock file of a SQLite catalog: beside the catalog's file (homes that share
    a catalog share its lock). A catalog on PostgreSQL is locked in its database instead
    (`advisory_lock`)."""
    file = Path(settings.lake_catalog.removeprefix("sqlite:"))
    return file.with_name(file.name + ".writer.lock")


# PostgreSQL advisory locks of a catalog on a server (keys in the catalog's database): the
# writers' and maintenance's.
_WRITER_KEY = 0x70686C6F_0001  # "phlo", 1
_MAINTENANCE_KEY = 0x70686C6F_0002


@contextmanager
def lakehouse_writer(settings: PhloSettings) -> Iterator[None]:
    """Exclusive right to write the lakehouse: among this machine's processes (a file lock)
    for a SQLite catalog; among every machine's for a catalog on PostgreSQL (an advisory lock
    in the catalog's own database, which every writer reaches)."""
    if settings.lake_catalog.startswith("postgres:"):
        with advisory_lock(settings, _WRITER_KEY):
            yield
        return
    with file_lock(lakehouse_writer_lock_path(settings)):
        yield


def _maintenance_lock_path(settings: PhloSettings) -> Path:
    return lakehouse_writer_lock_path(settings).with_suffix(".maintenance")


@contextmanager
def lakehouse_building(settings: PhloSettings) -> Iterator[None]:
    """Shared among dbt's daily builds, which run at once from many processes; exclusive for
    maintenance (`lakehouse_maintenance`), which expires snapshots and deletes the files of old
    ones: never while a build reads or writes. A shared `flock` on a file of its own (a shared
    advisory lock on PostgreSQL)."""
    if settings.lake_catalog.startswith("postgres:"):
        with advisory_lock(settings, _MAINTENANCE_KEY, shared=True):
            yield
        return
    path = _maintenance_lock_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


@contextmanager
def lakehouse_maintenance(settings: PhloSettings) -> Iterator[None]:
    """The lakehouse to itself: no writer (`lakehouse_writer`) and no dbt build
    (`lakehouse_building`) at the same time."""
    if settings.lake_catalog.startswith("postgres:"):
        with advisory_lock(settings, _MAINTENANCE_KEY), lakehouse_writer(settings):
            yield
        return
    with file_lock(_maintenance_lock_path(settings)), lakehouse_writer(settings):
        yield


@contextmanager
def advisory_lock(settings: PhloSettings, key: int, *, shared: bool = False) -> Iterator[None]:
    """A PostgreSQL advisory lock in the catalog's database, held by a session of its own for
    the block, waiting for it. Released by PostgreSQL when the session ends, a process killed
    included: its connection closes; a machine lost without closing it is found by TCP
    keepalives within about a minute. Reentrant within a process, as `file_lock` is."""
    dsn = settings.lake_catalog.removeprefix("postgres:")
    held = (hashlib.sha256(dsn.encode()).hexdigest(), key)
    with _reentrant(held, lambda: _advisory_session(dsn, key, shared)):
        yield


@contextmanager
def _advisory_session(dsn: str, key: int, shared: bool) -> Iterator[None]:
    import psycopg2

    connection = psycopg2.connect(
        dsn, connect_timeout=10, keepalives=1, keepalives_idle=20, keepalives_interval=5
    )
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            # The server's side of the same: a session whose machine vanished ends.
            cursor.execute(
                "set tcp_keepalives_idle = 20; set tcp_keepalives_interval = 5; "
                "set tcp_keepalives_count = 6"
            )
            cursor.execute(
                "select pg_advisory_lock_shared(%s)" if shared else "select pg_advisory_lock(%s)",
                [key],
            )
        yield
    finally:
        connection.close()  # ends the session: the lock goes with it


def write_atomically(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Replace `path` with `text` so that readers (and a kill midway) see the old or the new
    file whole, never a truncated one. The file has `mode` from its first byte (written, then
    chmodded, another user could open a secret in between), and nothing is written through a
    symlink planted in the folder (the scratch file is created exclusively; a rename replaces
    a link, it does not follow it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), mode)  # whatever the umask
        out.write(text)
    os.replace(temporary, path)
