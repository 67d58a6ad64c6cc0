"""Cross-process locks for what must not run twice at once on one home or one lakehouse.

Many processes may work on one home at a time (`phlo materialize` in several terminals, backfill
workers, runs launched from the UI). What they share and cannot share freely:
- the lakehouse's writers: with a SQLite catalog, a commit fails with `database is locked`
  whenever another process commits at the same moment, and dbt does not retry; two dbt builds
  also trip over each other's `__dbt_tmp` relations. Writes are serialized per catalog
  (`lakehouse_writer`); reads are not.
- first-time set-up: creating Dagster's SQLite storage (two processes stamping its schema at
  once corrupted the instance for good) and preparing a dbt project (profile, manifest).

These are `flock` locks on files: the kernel releases them when a process dies, even by SIGKILL,
so a killed process never leaves a lock behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
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
    share its lock), or, for a catalog on a server, in the machine's temporary folder keyed by
    the catalog (so homes on this machine that share it share the lock too)."""
    catalog = settings.lake_catalog
    if catalog.startswith("sqlite:"):
        file = Path(catalog.removeprefix("sqlite:"))
        return file.with_name(file.name + ".writer.lock")
    digest = hashlib.sha256(catalog.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "phlo-locks" / f"lakehouse-{digest}.lock"


@contextmanager
def lakehouse_writer(settings: PhloSettings) -> Iterator[None]:
    """Exclusive right, among this machine's processes, to write the lakehouse."""
    with file_lock(lakehouse_writer_lock_path(settings)):
        yield


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` so that readers (and a kill midway) see the old or the new
    file whole, never a truncated one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
