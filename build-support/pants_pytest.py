"""A pytest plugin for tests run by Pants (`-p pants_pytest` in pants.toml), loaded before conftest.

Pants runs the tests in a sandbox and puts the code on sys.path through PEX_EXTRA_SYS_PATH with
paths relative to the sandbox. A test that changes directory (tests/conftest.py moves every test
into its tmp_path) and then starts `sys.executable -c "import phlo_core..."` would resolve them
against the new directory and find nothing: they are made absolute here, once, from the sandbox,
in the environment (for `sys.executable -c ...`) and in sys.path (which multiprocessing's spawn
hands to its children).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pytest

for _var in ("PEX_EXTRA_SYS_PATH", "__PEX_EXTRA_SYS_PATH__"):
    if os.environ.get(_var):
        os.environ[_var] = os.pathsep.join(
            os.path.abspath(p) for p in os.environ[_var].split(os.pathsep) if p
        )
sys.path[:] = [p if not p or os.path.isabs(p) else os.path.abspath(p) for p in sys.path]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Pants runs several pytest processes at once. Each one resets the shared
    /tmp/pytest-of-<user> to mode 0700 when it starts, taking away the o+x that `phlo services`
    gives the folders above a PostgreSQL data directory for the `postgres` user: so each process
    gets a base temporary folder of its own (as short a path), removed when it ends."""
    if config.option.basetemp is None:
        config.option.basetemp = tempfile.mkdtemp(prefix="pytest-pants-")
        config.add_cleanup(lambda: shutil.rmtree(config.option.basetemp, ignore_errors=True))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Pants runs pytest once per test file: a file whose tests are all deselected (all slow)
    collects none, which pytest reports as exit code 5 and Pants as a failure."""
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = 0
