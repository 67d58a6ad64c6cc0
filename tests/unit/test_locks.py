from __future__ import annotations

import fcntl
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from phlo_core.lakehouse.locks import write_atomically

# How long to wait for an event (a line, a process's exit) before calling it missed: only ever
# a timeout, generous for a busy machine, never a measure of speed.
DEADLINE_SECONDS = 30.0


class _Child:
    """A Python process running a script, spoken to by lines on its stdin and stdout."""

    def __init__(self, script: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                self._lines.put(line.rstrip("\n"))
        self._lines.put("<end of output>")

    def next_line(self) -> str:
        try:
            return self._lines.get(timeout=DEADLINE_SECONDS)
        except queue.Empty:
            return f"<nothing in {DEADLINE_SECONDS} s>"

    def said_nothing(self) -> bool:
        """Whether it runs on with no new line yet (it has not got past where it is)."""
        return self._lines.empty() and self.process.poll() is None

    def quiet_for(self, seconds: float) -> bool:
        """Whether no line comes for `seconds` (a chance to go wrong, not a measure of speed)."""
        try:
            self._lines.get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def go_on(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()


@pytest.fixture
def python() -> Iterator[Callable[[str], _Child]]:
    """Start Python processes; whatever a test leaves running is killed after it."""
    started: list[_Child] = []

    def start(script: str) -> _Child:
        started.append(_Child(script))
        return started[-1]

    yield start
    for child in started:
        child.process.kill()
        child.process.wait()
        if child.process.stdin is not None:
            child.process.stdin.close()


def _taken(path: Path) -> bool:
    """Whether the lock on `path` is held, as another process trying it without waiting sees."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the lock if this probe took it
    return False


def _waits_for_lock(pid: int, path: Path) -> bool:
    """Whether process `pid` is queued in the kernel behind a lock another holds on `path`:
    the lines of /proc/locks for waiters read `N: -> FLOCK ADVISORY WRITE PID MAJ:MIN:INODE …`."""
    inode = path.stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if (
            len(fields) > 6
            and fields[1] == "->"
            and fields[5] == str(pid)
            and fields[6].rsplit(":", 1)[-1] == str(inode)
        ):
            return True
    return False


def test_a_lock_is_reentrant_within_a_process(
    tmp_path: Path, python: Callable[[str], _Child]
) -> None:
    """A nested block for a lock the process holds goes on (a second flock would wait for
    itself forever), and leaving it keeps the lock: only the outermost block releases it."""
    lock = tmp_path / "a.lock"
    child = python(
        f"""
        import sys
        from pathlib import Path
        from phlo_core.lakehouse.locks import file_lock
        lock = Path({str(lock)!r})
        with file_lock(lock):
            with file_lock(lock):
                print("inner", flush=True)
                sys.stdin.readline()
            print("outer", flush=True)
            sys.stdin.readline()
        print("released", flush=True)
        """
    )
    assert child.next_line() == "inner", "a nested block waits for the lock its process holds"
    assert _taken(lock), "the nested block runs without the lock"
    child.go_on()
    assert child.next_line() == "outer"
    assert _taken(lock), "leaving the nested block released the lock the outer block holds"
    child.go_on()
    assert child.next_line() == "released"
    assert not _taken(lock), "the lock outlives the outermost block"
    assert child.process.wait(timeout=DEADLINE_SECONDS) == 0


def test_a_lock_excludes_another_process_and_dies_with_it(
    tmp_path: Path, python: Callable[[str], _Child]
) -> None:
    lock = tmp_path / "a.lock"
    holder = python(
        f"""
        import sys
        from pathlib import Path
        from phlo_core.lakehouse.locks import file_lock
        with file_lock(Path({str(lock)!r})):
            print("held", flush=True)
            sys.stdin.readline()  # holds the lock until killed
        """
    )
    assert holder.next_line() == "held"
    waiter = python(
        f"""
        from pathlib import Path
        from phlo_core.lakehouse.locks import file_lock
        print("waiting", flush=True)
        with file_lock(Path({str(lock)!r})):
            print("got it", flush=True)
        """
    )
    # Imported, and about to ask for the lock: then seen queued for it by the kernel, so what
    # follows tests a process that waits for the lock, not one that has not asked yet.
    assert waiter.next_line() == "waiting"
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not _waits_for_lock(waiter.process.pid, lock):
        assert waiter.said_nothing(), "the second process got the lock the first holds"
        assert time.monotonic() < deadline, "the second process never waited for the lock"
        time.sleep(0.01)
    assert waiter.quiet_for(0.5), "the second process got the lock the first holds"
    holder.process.kill()  # SIGKILL: the kernel releases the lock
    holder.process.wait(timeout=DEADLINE_SECONDS)
    assert waiter.next_line() == "got it", "the lock outlived the process that held it"
    assert waiter.process.wait(timeout=DEADLINE_SECONDS) == 0


def test_an_atomic_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    write_atomically(target, "{}")
    write_atomically(target, '{"nodes": {}}')
    assert target.read_text() == '{"nodes": {}}'
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
