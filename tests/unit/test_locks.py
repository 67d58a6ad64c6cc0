from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from phlo_core.locks import file_lock, lakehouse_writer_lock_path, write_atomically
from phlo_core.settings import load_settings


def test_a_lock_is_reentrant_within_a_process(tmp_path: Path) -> None:
    with file_lock(tmp_path / "a.lock"), file_lock(tmp_path / "a.lock"):
        pass  # would wait for itself forever without reentrancy


def test_a_lock_excludes_another_process_and_dies_with_it(tmp_path: Path) -> None:
    lock = tmp_path / "a.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from phlo_core.locks import file_lock\n"
            f"with file_lock(Path({str(lock)!r})):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    waiter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from pathlib import Path\n"
            "from phlo_core.locks import file_lock\n"
            f"with file_lock(Path({str(lock)!r})):\n"
            "    print('got it')\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    assert waiter.poll() is None, "the second process waits while the first holds the lock"
    holder.kill()  # SIGKILL: the kernel releases the lock
    out, _ = waiter.communicate(timeout=30)
    assert out.strip() == "got it"


def test_an_atomic_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    write_atomically(target, "{}")
    write_atomically(target, '{"nodes": {}}')
    assert target.read_text() == '{"nodes": {}}'
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_a_server_catalogs_writer_lock_is_in_the_users_private_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not in a folder every user may write (the machine's temporary folder), where anyone
    could plant the file or hold the lock; and the same for every process of the user,
    whatever its session ($XDG_RUNTIME_DIR differs between cron, ssh and a desktop)."""
    settings = load_settings(
        phlo_home=tmp_path / "home",
        phlo_lake_catalog="postgres:dbname=lake host=127.0.0.1 port=5432 user=phlo",
    )
    path = lakehouse_writer_lock_path(settings)
    assert path.parent == Path(f"/tmp/phlo-{os.getuid()}")
    info = path.parent.lstat()
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == os.getuid()

    session = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        session.chmod(0o700)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(session))
        assert lakehouse_writer_lock_path(settings) == path
        with file_lock(path):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600  # nobody else may even open it
    finally:
        shutil.rmtree(session)
