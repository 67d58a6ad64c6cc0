"""Ending a process that ran Dagster runs, dbt and matplotlib without tearing its interpreter
down.

Python's normal exit frees every object the process made, module by module: after a day's run
that took 1.4-1.5 s (from the run's last event to the shell's prompt), with the command finished
and its process not yet ended. `exit_now` runs what the libraries registered to run at exit
(logging's flush, temporary folders, file locks, dbt's connections), flushes the standard
streams, and lets the kernel free the rest at once: what a served command's process already
does when its command ends.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from typing import NoReturn


def exit_code(exc: SystemExit) -> int:
    """The status a `SystemExit` asks for, as `sys.exit` would end the process with it (a
    message is printed, as Python does, and ends it with 1)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def exit_now(code: int) -> NoReturn:
    """End the process with `code`, after its exit handlers and with its output flushed."""
    try:
        atexit._run_exitfuncs()  # pyright: ignore[reportPrivateUsage]
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError, AttributeError):  # closed, or none
                stream.flush()
        os._exit(code)
