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

These are `flock` locks on files: the kernel releases them when a process dies, even by SIGKILL,
so a killed process never leaves a lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from phlo_core.private_folder import NotPrivateError, private_folder
from phlo_core.settings import PhloSettings

_held: dict[Path, int] = {}
_held_guard = threading.Lock()


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the block, waiting for it.

    Reentrant within a process (a flock on a second descriptor would wait for itself forever):
    a nested block for a path this process holds just goes on.
    """
    path = path.resolve()
    with _held_guard:
        if path in _held:
            _held[path] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield
        finally:
            with _held_guard:
                _held[path] -= 1
        return
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
        with _held_guard:
            _held[path] = 1
        try:
            yield
        finally:
            with _held_guard:
                del _held[path]
    finally:
        os.close(fd)  # closing releases the lock


def lakehouse_writer_lock_path(settings: PhloSettings) -> Path:
    """One lock file per catalog: beside a SQLite catalog file (homes that share a catalog
    share its lock), or, for a catalog on a server, in the user's private folder /tmp/phlo-UID
    keyed by the catalog (so this user's homes that share it share the lock too; a folder
    every user could write, as /tmp/phlo-locks was, let anyone hold the lock or plant the
    file; when the private folder is not private, writes refuse rather than go unlocked).
    Other users and other machines on the same catalog rely on DuckLake's conflict handling
    and phlo's transaction retries, as they always have."""
    catalog = settings.lake_catalog
    if catalog.startswith("sqlite:"):
        file = Path(catalog.removeprefix("sqlite:"))
        return file.with_name(file.name + ".writer.lock")
    digest = hashlib.sha256(catalog.encode()).hexdigest()[:16]
    try:
        # /tmp, not $XDG_RUNTIME_DIR: every process of this user (cron, ssh, a desktop
        # session) must find the same lock, and a session's folder goes at logout.
        folder = private_folder("/tmp")
    except NotPrivateError as exc:
        raise NotPrivateError(f"cannot lock the lakehouse's writers: {exc}") from None
    return folder / f"lakehouse-{digest}.lock"


@contextmanager
def lakehouse_writer(settings: PhloSettings) -> Iterator[None]:
    """Exclusive right, among this machine's processes, to write the lakehouse."""
    with file_lock(lakehouse_writer_lock_path(settings)):
        yield


def _maintenance_lock_path(settings: PhloSettings) -> Path:
    return lakehouse_writer_lock_path(settings).with_suffix(".maintenance")


@contextmanager
def lakehouse_building(settings: PhloSettings) -> Iterator[None]:
    """Shared among dbt's daily builds, which run at once from many processes; exclusive for
    maintenance (`lakehouse_maintenance`), which expires snapshots and deletes the files of old
    ones: never while a build reads or writes. A shared `flock` on a file of its own."""
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
    with file_lock(_maintenance_lock_path(settings)), lakehouse_writer(settings):
        yield


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
