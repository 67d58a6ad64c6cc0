"""The user's private runtime folder: `$XDG_RUNTIME_DIR/phlo-UID`, or `/tmp/phlo-UID`.

What phlo keeps outside PHLO_HOME for this user alone lives here: the warm server's sockets,
locks and logs, and the writer locks of lakehouses whose catalog is on a server. A folder in a
shared place can be planted, or swapped for a symlink, by another user before phlo creates it;
then files named after a key would be created in their folder and a client could connect to
their listener. So the folder must be this user's own, mode 0700, not a symlink (checked with
lstat after a mkdir that never follows links), inside folders that only root or this user can
rearrange (or sticky ones, as /tmp); otherwise `NotPrivateError`, and the caller does without.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path


class NotPrivateError(OSError):
    """A place that another user could control: nothing is created or sent there."""


def private_folder(base: str | None = None) -> Path:
    """The user's private folder in `base` (default: $XDG_RUNTIME_DIR, else /tmp), created if
    missing; `NotPrivateError` when it is not private."""
    base = base or os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    try:
        real = os.path.realpath(base)
        if len(real) > 60:  # a socket's path has at most 107 bytes
            real = os.path.realpath("/tmp")
        path = _steady(Path(real)) / f"phlo-{os.getuid()}"
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)  # never follows a symlink in the last component
        check_private(path)
    except NotPrivateError:
        raise
    except OSError as exc:
        raise NotPrivateError(f"{exc.filename or base}: {exc.strerror or exc}") from None
    return path


def _steady(real: Path) -> Path:
    """`real` (a path without symlinks) if no one but root and this user can replace what is in
    it or above it: each folder theirs, and writable by others only if sticky (as /tmp, where
    only an entry's owner can rename or remove it)."""
    uid = os.getuid()
    for part in (real, *real.parents):
        info = os.lstat(part)
        if info.st_uid not in (0, uid):
            raise NotPrivateError(f"{part} belongs to another user (uid {info.st_uid})")
        if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            raise NotPrivateError(f"{part} is writable by other users and not sticky")
    return real


def check_private(path: Path) -> None:
    """`path` itself (lstat: a symlink is refused, not followed) is this user's folder, 0700."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise NotPrivateError(f"{path} is a symlink")
    if not stat.S_ISDIR(info.st_mode):
        raise NotPrivateError(f"{path} is not a folder")
    if info.st_uid != os.getuid():
        raise NotPrivateError(f"{path} belongs to another user (uid {info.st_uid})")
    if stat.S_IMODE(info.st_mode) != 0o700:
        raise NotPrivateError(f"{path} has mode {stat.S_IMODE(info.st_mode):04o}, not 0700")


def open_private(path: Path, flags: int) -> int:
    """Open (creating, 0600) a file in the private folder, never through a symlink."""
    return os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
