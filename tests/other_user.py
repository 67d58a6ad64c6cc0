"""A second, unprivileged local user for tests of what other users of the machine can reach.

Tests that ask "can another user connect, read, impersonate?" run commands as this user. It is
created once (as root, with `useradd`) and kept: creating it again on every run would race with
other test processes. Without root and without such a user, those tests are skipped with the
reason.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

NAME = "phlo-other"
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"


@dataclass(frozen=True)
class OtherUser:
    name: str
    uid: int
    gid: int

    def run(
        self,
        command: Sequence[str],
        *,
        timeout: float = 60,
        env: dict[str, str] | None = None,
        cwd: str = "/",
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` as this user (runuser), with a minimal environment of its own."""
        base = {
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": "/tmp",
            "LANG": "C.UTF-8",
        }
        return subprocess.run(
            [RUNUSER, "-u", self.name, "--", *command],
            env={**base, **(env or {})},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def other_user() -> OtherUser:
    """The second user, created if missing; pytest.skip when this machine cannot have one."""
    try:
        entry = pwd.getpwnam(NAME)
    except KeyError:
        if os.geteuid() != 0 or shutil.which("useradd") is None:
            pytest.skip(f"needs root (useradd) or an existing unprivileged user {NAME!r}")
        done = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", NAME],
            capture_output=True,
            text=True,
        )
        # Another test process may have created it at the same moment.
        if done.returncode not in (0, 9):
            pytest.skip(f"could not create the user {NAME!r}: {done.stderr.strip()}")
        entry = pwd.getpwnam(NAME)
    if os.geteuid() != 0 or not os.access(RUNUSER, os.X_OK):
        pytest.skip("needs root and runuser to run commands as another user")
    return OtherUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


@pytest.fixture(scope="session")
def second_user() -> OtherUser:
    return other_user()
