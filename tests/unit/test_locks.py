from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from phlo_core.locks import file_lock, write_atomically


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
